import type { CheckpointService } from "../../src/services/checkpoint-service.js";
import type { Processor } from "../processor-registry.js";

export function checkpointImportProcessor(service: CheckpointService): Processor<"checkpoint.import"> {
  return (payload) => service.runImport(payload.checkpointId);
}

export function checkpointRenameProcessor(service: CheckpointService): Processor<"checkpoint.rename"> {
  return (payload) => service.runRename(payload.fileId);
}

export function checkpointsHousekeepingProcessor(service: CheckpointService): Processor<"checkpoints.housekeeping"> {
  return async () => {
    await service.abortStaleUploads();
  };
}
