import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { StoredEvent } from "../../domain/events.js";

type Listener = (event: StoredEvent) => void;

/**
 * Cross-process fan-out of stored events through Redis pub/sub: one channel per stream, one Redis
 * subscription per stream per process however many local listeners it has.
 */
export class RedisEventBus {
  private readonly listeners = new Map<string, Set<Listener>>();
  private readonly subscribing = new Map<string, Promise<unknown>>();

  constructor(
    private readonly publisher: Redis,
    private readonly subscriber: Redis,
    private readonly channelPrefix: string,
    private readonly log: Logger,
  ) {
    subscriber.on("message", (channel: string, message: string) => this.dispatch(channel, message));
  }

  private channel(streamId: string) {
    return `${this.channelPrefix}:events:${streamId}`;
  }

  async publish(events: StoredEvent[]): Promise<void> {
    if (events.length === 0) return;
    const pipeline = this.publisher.pipeline();
    for (const e of events) pipeline.publish(this.channel(e.streamId), JSON.stringify(e));
    await pipeline.exec();
  }

  /** Resolves once Redis has confirmed the subscription, so nothing published afterwards is missed. */
  async listen(streamId: string, listener: Listener): Promise<() => void> {
    let set = this.listeners.get(streamId);
    if (!set) {
      set = new Set();
      this.listeners.set(streamId, set);
      this.subscribing.set(streamId, this.subscriber.subscribe(this.channel(streamId)));
    }
    set.add(listener);
    try {
      await this.subscribing.get(streamId);
    } catch (e) {
      this.remove(streamId, listener);
      throw e;
    }
    return () => this.remove(streamId, listener);
  }

  private remove(streamId: string, listener: Listener) {
    const set = this.listeners.get(streamId);
    if (!set) return;
    set.delete(listener);
    if (set.size === 0) {
      this.listeners.delete(streamId);
      this.subscribing.delete(streamId);
      if (this.subscriber.status === "ready") {
        this.subscriber.unsubscribe(this.channel(streamId)).catch((err: unknown) => this.log.warn({ err }, "unsubscribe failed"));
      }
    }
  }

  private dispatch(channel: string, message: string) {
    const streamId = channel.slice(this.channelPrefix.length + ":events:".length);
    const set = this.listeners.get(streamId);
    if (!set) return;
    let event: StoredEvent;
    try {
      const raw = JSON.parse(message) as StoredEvent & { createdAt: string };
      event = { ...raw, createdAt: new Date(raw.createdAt) };
    } catch (err) {
      this.log.warn({ err, channel }, "dropped an unreadable event message");
      return;
    }
    for (const l of set) l(event);
  }

  get activeStreams(): number {
    return this.listeners.size;
  }
}
