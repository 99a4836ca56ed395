import type { CheckpointService } from "../../src/services/checkpoint-service.js";
import type { InferenceService } from "../../src/services/inference-service.js";
import type { EndpointService } from "../../src/services/endpoint-service.js";
import type { ModelService } from "../../src/services/model-service.js";
import type { TrainingService } from "../../src/services/training-service.js";
import type { SystemCheckService } from "../../src/services/system-check-service.js";
import type { Processors } from "../processor-registry.js";
import { checkpointImportProcessor, checkpointRenameProcessor, checkpointsHousekeepingProcessor } from "./checkpoint.processor.js";
import { endpointDeleteProcessor, endpointDeployProcessor, endpointsReconcileProcessor, webUiHealthProcessor } from "./endpoint.processor.js";
import { inferenceDispatchProcessor, inferencesReconcileProcessor, inferenceWatchProcessor, inferenceWebUiRunProcessor } from "./inference.processor.js";
import { systemCheckProcessor } from "./system-check.processor.js";
import { mergeRunProcessor, modelCreateProcessor, trainingRunProcessor, trainingsReconcileProcessor } from "./training.processor.js";

/** One processor per job name; the type makes a missing one a compile error, assertProcessors a start error. */
export function buildProcessors(services: { systemChecks: SystemCheckService; endpoints: EndpointService; checkpoints: CheckpointService; inferences: InferenceService; models: ModelService; trainings: TrainingService }): Processors {
  return {
    "system.check": systemCheckProcessor(services.systemChecks),
    "endpoint.deploy": endpointDeployProcessor(services.endpoints),
    "endpoint.delete": endpointDeleteProcessor(services.endpoints),
    "endpoints.reconcile": endpointsReconcileProcessor(services.endpoints),
    "checkpoint.import": checkpointImportProcessor(services.checkpoints),
    "checkpoint.rename": checkpointRenameProcessor(services.checkpoints),
    "checkpoints.housekeeping": checkpointsHousekeepingProcessor(services.checkpoints),
    "inference.dispatch": inferenceDispatchProcessor(services.inferences),
    "inference.webui-run": inferenceWebUiRunProcessor(services.inferences),
    "inference.watch": inferenceWatchProcessor(services.inferences),
    "inferences.reconcile": inferencesReconcileProcessor(services.inferences),
    "webui.health": webUiHealthProcessor(services.endpoints),
    "model.create": modelCreateProcessor(services.models),
    "training.run": trainingRunProcessor(services.trainings),
    "trainings.reconcile": trainingsReconcileProcessor(services.trainings, services.models),
    "merge.run": mergeRunProcessor(services.models),
  };
}
