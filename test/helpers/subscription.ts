import { createClient } from "graphql-ws";
import WebSocket from "ws";

/** A stored event as the *Events subscriptions deliver it (`cursor`/`inferenceId` on the my* streams). */
export interface StreamEvent {
  seq: number;
  type: string;
  data: Record<string, any>;
  terminal: boolean;
  cursor: number;
  inferenceId: string;
}

/**
 * Subscribes over graphql-ws with an API key and collects `field`'s events until `done` accepts what
 * was seen, or the server completes the stream; then disposes the client. `ready` resolves once the
 * socket is acknowledged (a little later, so the subscription is registered on the server).
 */
export function collectEvents<T = StreamEvent>(options: {
  wsUrl: string;
  key: string;
  query: string;
  variables?: Record<string, unknown>;
  field: string;
  done?: (seen: T[]) => boolean;
  timeoutMs?: number;
}): { events: Promise<T[]>; ready: Promise<void> } {
  const client = createClient({ url: options.wsUrl, webSocketImpl: WebSocket, connectionParams: { "x-api-key": options.key }, retryAttempts: 0 });
  let ready!: () => void;
  const readyP = new Promise<void>((r) => (ready = r));
  client.on("connected", () => setTimeout(ready, 200));
  const events = new Promise<T[]>((resolve, reject) => {
    const seen: T[] = [];
    const finish = (error?: Error) => {
      clearTimeout(timer);
      void client.dispose();
      if (error) reject(error);
      else resolve(seen);
    };
    const timer = setTimeout(() => finish(new Error(`${options.field} timed out after ${seen.length} events: ${JSON.stringify(seen.map((e) => [(e as StreamEvent).seq, (e as StreamEvent).type]))}`)), options.timeoutMs ?? 30_000);
    client.subscribe<Record<string, T>>(
      { query: options.query, variables: options.variables ?? {} },
      {
        next: (m) => {
          if (m.errors) return finish(new Error(JSON.stringify(m.errors)));
          seen.push(m.data![options.field]!);
          if (options.done?.(seen)) finish();
        },
        error: (e) => finish(e instanceof Error ? e : new Error(JSON.stringify(e))),
        complete: () => finish(),
      },
    );
  });
  return { events, ready: readyP };
}
