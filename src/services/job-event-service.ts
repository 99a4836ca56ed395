import { z } from "zod";
import { DomainError } from "../domain/errors.js";
import { STREAM_KINDS, type StoredEvent, type StreamKind } from "../domain/events.js";
import type { Principal } from "../domain/principal.js";
import { parseInput } from "../domain/validation.js";
import type { EventLog } from "./event-log.js";

const followSchema = z.object({
  jobId: z.uuid({ error: "must be a job id (a UUID)" }),
  after: z.number({ error: "must be a whole number" }).int({ error: "must be a whole number" }).min(0, { error: "must be 0 or more" }),
});

/** Who may read which job's events, and from where. */
export class JobEventService {
  constructor(private readonly events: EventLog) {}

  /** Checks access before the first event, so that a refusal is an error rather than an empty stream. */
  async follow(principal: Principal, jobId: unknown, after: unknown, signal?: AbortSignal): Promise<AsyncIterableIterator<StoredEvent>> {
    const v = parseInput(followSchema, { jobId, after });
    const stream = await this.events.stream(v.jobId);
    const resource = stream ? STREAM_KINDS[stream.kind as StreamKind] : undefined;
    const visible = stream && (stream.ownerId === principal.userId || (resource !== undefined && principal.permissions.allows(resource, "all")));
    if (!stream || !visible) throw DomainError.notFound(`job ${v.jobId} not found`);
    if (v.after > stream.lastSeq) throw DomainError.badInput(`after: ${v.after} is beyond the job's last event (${stream.lastSeq})`, "after");
    return this.events.follow(v.jobId, v.after, signal);
  }
}
