import type { SystemCheckService } from "../../src/services/system-check-service.js";
import type { Processor } from "../processor-registry.js";

export function systemCheckProcessor(service: SystemCheckService): Processor<"system.check"> {
  return (payload) => service.run(payload.checkId);
}
