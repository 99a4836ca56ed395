import type { ModelService } from "../../src/services/model-service.js";
import type { TrainingService } from "../../src/services/training-service.js";
import type { Processor } from "../processor-registry.js";

export function modelCreateProcessor(service: ModelService): Processor<"model.create"> {
  return (payload) => service.runCreate(payload.modelId);
}

export function mergeRunProcessor(service: ModelService): Processor<"merge.run"> {
  return (payload) => service.runMerge(payload.mergeId);
}

export function trainingRunProcessor(service: TrainingService): Processor<"training.run"> {
  return (payload) => service.run(payload.trainingId);
}

/** Unfinished trainings, model creations and merges get their job back if it was lost. */
export function trainingsReconcileProcessor(trainings: TrainingService, models: ModelService): Processor<"trainings.reconcile"> {
  return async () => {
    await trainings.resumeUnfinished();
    await models.resumeUnfinished();
  };
}
