import type { InferenceService } from "../../src/services/inference-service.js";
import type { Processor } from "../processor-registry.js";

export function inferenceDispatchProcessor(service: InferenceService): Processor<"inference.dispatch"> {
  return (payload) => service.dispatch(payload.inferenceId);
}

export function inferenceWatchProcessor(service: InferenceService): Processor<"inference.watch"> {
  return (payload) => service.watch(payload.inferenceId);
}

export function inferenceWebUiRunProcessor(service: InferenceService): Processor<"inference.webui-run"> {
  return (payload) => service.runOnWebUi(payload.inferenceId);
}

export function inferencesReconcileProcessor(service: InferenceService): Processor<"inferences.reconcile"> {
  return async () => {
    await service.resumeUnfinished();
  };
}
