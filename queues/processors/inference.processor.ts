import type { InferenceService } from "../../src/services/inference-service.js";
import type { Processor } from "../processor-registry.js";
import { recheckLater } from "../recheck-later.js";

export function inferenceDispatchProcessor(service: InferenceService): Processor<"inference.dispatch"> {
  return async (payload, job, token) => {
    const { recheckInMs } = await service.dispatch(payload.inferenceId);
    if (recheckInMs !== undefined) await recheckLater(job, token, recheckInMs);
  };
}

export function inferenceWatchProcessor(service: InferenceService): Processor<"inference.watch"> {
  return async (payload, job, token) => {
    const { recheckInMs } = await service.watch(payload.inferenceId);
    if (recheckInMs !== undefined) await recheckLater(job, token, recheckInMs);
  };
}

export function inferenceWebUiRunProcessor(service: InferenceService): Processor<"inference.webui-run"> {
  return async (payload, job, token) => {
    const { recheckInMs } = await service.runOnWebUi(payload.inferenceId);
    if (recheckInMs !== undefined) await recheckLater(job, token, recheckInMs);
  };
}
