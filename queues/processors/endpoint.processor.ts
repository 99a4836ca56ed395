import type { EndpointService } from "../../src/services/endpoint-service.js";
import type { Processor } from "../processor-registry.js";

export function endpointDeployProcessor(service: EndpointService): Processor<"endpoint.deploy"> {
  return (payload) => service.advanceDeploy(payload.endpointId);
}

export function endpointDeleteProcessor(service: EndpointService): Processor<"endpoint.delete"> {
  return (payload) => service.advanceDelete(payload.endpointId);
}

export function endpointsReconcileProcessor(service: EndpointService): Processor<"endpoints.reconcile"> {
  return () => service.reconcile();
}

export function webUiHealthProcessor(service: EndpointService): Processor<"webui.health"> {
  return () => service.checkAllWebUiHealth();
}
