import type { ModelService } from "../../src/services/model-service.js";
import type { TrainingService } from "../../src/services/training-service.js";
import type { Processor } from "../processor-registry.js";
import { recheckLater } from "../recheck-later.js";

export function modelCreateProcessor(service: ModelService): Processor<"model.create"> {
  return async (payload, job, token) => {
    const { recheckInMs } = await service.runCreate(payload.modelId);
    if (recheckInMs !== undefined) await recheckLater(job, token, recheckInMs);
  };
}

export function mergeRunProcessor(service: ModelService): Processor<"merge.run"> {
  return async (payload, job, token) => {
    const { recheckInMs } = await service.runMerge(payload.mergeId);
    if (recheckInMs !== undefined) await recheckLater(job, token, recheckInMs);
  };
}

export function trainingRunProcessor(service: TrainingService): Processor<"training.run"> {
  return async (payload, job, token) => {
    const { recheckInMs } = await service.run(payload.trainingId);
    if (recheckInMs !== undefined) await recheckLater(job, token, recheckInMs);
  };
}

/** Unfinished trainings, model creations and merges get their job back if it was lost. */
export function trainingsReconcileProcessor(trainings: TrainingService, models: ModelService): Processor<"trainings.reconcile"> {
  return async () => {
    await trainings.resumeUnfinished();
    await models.resumeUnfinished();
  };
}
