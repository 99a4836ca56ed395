import type { SystemCheckService } from "../../src/services/system-check-service.js";
import type { Processors } from "../processor-registry.js";
import { systemCheckProcessor } from "./system-check.processor.js";

/** One processor per job name; the type makes a missing one a compile error, assertProcessors a start error. */
export function buildProcessors(services: { systemChecks: SystemCheckService }): Processors {
  return {
    "system.check": systemCheckProcessor(services.systemChecks),
  };
}
