import type { DataSource, EntityManager } from "typeorm";
import type { Logger } from "pino";
import type { RedisEventBus } from "../adapters/events/event-bus.js";
import { EventStreamEntity, JobEventEntity } from "../adapters/db/entities/event.entity.js";
import { z } from "zod";
import { DomainError } from "../domain/errors.js";
import type { NewEvent, StoredEvent, StreamKind } from "../domain/events.js";
import { parseInput } from "../domain/validation.js";

const REPLAY_PAGE = 500;

/** Records events inside a transaction; what was recorded is published only after the commit. */
export interface EventRecorder {
  openStream(streamId: string, kind: StreamKind, ownerId: string | null): Promise<void>;
  append(streamId: string, event: NewEvent): Promise<StoredEvent>;
}

function toStored(row: JobEventEntity): StoredEvent {
  return { streamId: row.streamId, seq: row.seq, type: row.type, data: row.data, terminal: row.terminal, createdAt: row.createdAt };
}

/**
 * The event log: every state change and progress step of a job, stored with a per-job sequence in
 * the same transaction as the change, published through Redis after commit, replayable from any
 * sequence number.
 */
export class EventLog {
  constructor(
    private readonly db: DataSource,
    private readonly bus: RedisEventBus,
    private readonly log: Logger,
  ) {}

  /** Runs `work` in one transaction with an event recorder; publishes the recorded events after commit. */
  async transaction<T>(work: (tx: EntityManager, events: EventRecorder) => Promise<T>): Promise<T> {
    const recorded: StoredEvent[] = [];
    const result = await this.db.transaction(async (tx) => {
      const recorder: EventRecorder = {
        openStream: async (streamId, kind, ownerId) => {
          await tx.query(`INSERT INTO event_streams (id, kind, owner_id) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING`, [streamId, kind, ownerId]);
        },
        append: async (streamId, event) => {
          const stored = await this.appendIn(tx, streamId, event);
          recorded.push(stored);
          return stored;
        },
      };
      return work(tx, recorder);
    });
    await this.publish(recorded);
    return result;
  }

  /** Appends to an existing stream without other changes (progress steps). */
  async append(streamId: string, event: NewEvent): Promise<StoredEvent> {
    return this.transaction((_tx, events) => events.append(streamId, event));
  }

  private async appendIn(tx: EntityManager, streamId: string, event: NewEvent): Promise<StoredEvent> {
    // The UPDATE takes the stream's row lock until commit, so concurrent appenders get consecutive
    // numbers and commit in sequence order.
    // Wrapped in a CTE so the driver returns plain rows (a bare UPDATE ... RETURNING comes back as [rows, count]).
    const bumped: Array<{ last_seq: number }> = await tx.query(
      `WITH bumped AS (UPDATE event_streams SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq) SELECT last_seq FROM bumped`,
      [streamId],
    );
    const seq = bumped[0]?.last_seq;
    if (seq === undefined) throw new Error(`event stream ${streamId} does not exist`);
    const rows: JobEventEntity[] = await tx.query(
      `INSERT INTO job_events (stream_id, seq, type, data, terminal) VALUES ($1, $2, $3, $4, $5)
       RETURNING stream_id AS "streamId", seq, type, data, terminal, created_at AS "createdAt"`,
      [streamId, seq, event.type, JSON.stringify(event.data ?? {}), event.terminal ?? false],
    );
    return toStored(rows[0]!);
  }

  private async publish(events: StoredEvent[]) {
    try {
      await this.bus.publish(events);
    } catch (err) {
      // The events are stored; subscribers that miss the live message recover them on the next
      // event (gap fill) or on reconnect (replay from their last sequence).
      this.log.warn({ err }, "publishing events failed; they remain replayable from the log");
    }
  }

  async stream(streamId: string): Promise<EventStreamEntity | null> {
    return this.db.getRepository(EventStreamEntity).findOneBy({ id: streamId });
  }

  async readAfter(streamId: string, after: number, limit = REPLAY_PAGE, upTo?: number): Promise<StoredEvent[]> {
    const qb = this.db
      .getRepository(JobEventEntity)
      .createQueryBuilder("e")
      .where("e.stream_id = :streamId AND e.seq > :after", { streamId, after })
      .orderBy("e.seq", "ASC")
      .limit(limit);
    if (upTo !== undefined) qb.andWhere("e.seq <= :upTo", { upTo });
    return (await qb.getMany()).map(toStored);
  }

  /**
   * `follow` for a subscriber's `after` (checked: a whole number, not beyond the stream's last event,
   * since past the end of a finished stream the terminal event never comes and the subscription would
   * hang). `what` names the stream in the refusal ("the training's").
   */
  async followFrom(streamId: string, after: unknown, what: string): Promise<AsyncIterableIterator<StoredEvent>> {
    const v = parseInput(z.number({ error: "must be a whole number" }).int().min(0, { error: "must be 0 or more" }), after, "after");
    const stream = await this.stream(streamId);
    if (stream && v > stream.lastSeq) throw DomainError.badInput(`after: ${v} is beyond ${what} last event (${stream.lastSeq})`, "after");
    return this.follow(streamId, v);
  }

  /**
   * Every event after `after`, then live ones, in order, with no gaps or duplicates. Ends after the
   * stream's terminal event, or when `signal` aborts.
   */
  follow(streamId: string, after: number, signal?: AbortSignal): AsyncIterableIterator<StoredEvent> {
    // An async generator parked on an await cannot be returned from; aborting wakes it first, so
    // that a client that unsubscribes releases its Redis subscription at once.
    const controller = new AbortController();
    const forward = () => controller.abort();
    signal?.addEventListener("abort", forward, { once: true });
    const generator = this.followUntilAborted(streamId, after, controller.signal);
    const stop = () => {
      signal?.removeEventListener("abort", forward);
      controller.abort();
    };
    return {
      next: () => generator.next(),
      return: async (value?: unknown) => {
        stop();
        return generator.return(value as undefined);
      },
      throw: async (error?: unknown) => {
        stop();
        return generator.throw(error);
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  private async *followUntilAborted(streamId: string, after: number, signal: AbortSignal): AsyncGenerator<StoredEvent> {
    const pending: StoredEvent[] = [];
    let wake: (() => void) | undefined;
    const onAbort = () => wake?.();
    signal.addEventListener("abort", onAbort);
    const stopListening = await this.bus.listen(streamId, (e) => {
      pending.push(e);
      wake?.();
    });
    let last = after;
    try {
      // Replay what was stored; live messages that arrive meanwhile queue up in `pending`.
      for (;;) {
        const page = await this.readAfter(streamId, last);
        for (const e of page) {
          yield e;
          last = e.seq;
          if (e.terminal) return;
        }
        if (page.length < REPLAY_PAGE) break;
      }
      while (!signal.aborted) {
        if (pending.length === 0) {
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
          continue;
        }
        pending.sort((a, b) => a.seq - b.seq);
        const next = pending.shift()!;
        if (next.seq <= last) continue;
        if (next.seq > last + 1) {
          // A message was missed or overtaken: fill the gap from the log.
          for (const e of await this.readAfter(streamId, last, next.seq - last - 1, next.seq - 1)) {
            yield e;
            last = e.seq;
            if (e.terminal) return;
          }
        }
        yield next;
        last = next.seq;
        if (next.terminal) return;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      stopListening();
    }
  }
}
