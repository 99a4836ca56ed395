import type { EndpointService } from "../../src/services/endpoint-service.js";
import type { Processor } from "../processor-registry.js";
import { recheckLater } from "../recheck-later.js";

export function endpointDeployProcessor(service: EndpointService): Processor<"endpoint.deploy"> {
  return async (payload, job, token) => {
    const { recheckInMs } = await service.advanceDeploy(payload.endpointId);
    if (recheckInMs !== undefined) await recheckLater(job, token, recheckInMs);
  };
}

export function endpointDeleteProcessor(service: EndpointService): Processor<"endpoint.delete"> {
  return async (payload, job, token) => {
    const { recheckInMs } = await service.advanceDelete(payload.endpointId);
    if (recheckInMs !== undefined) await recheckLater(job, token, recheckInMs);
  };
}

export function endpointsReconcileProcessor(service: EndpointService): Processor<"endpoints.reconcile"> {
  return () => service.reconcile();
}

export function webUiHealthProcessor(service: EndpointService): Processor<"webui.health"> {
  return () => service.checkAllWebUiHealth();
}
