/**
 * Minimal typings for autocannon 9 (it ships none), covering only what bench/ uses.
 *
 * Only the `skipAggregateResult: true` form is declared: it resolves with the raw per-run counters
 * rather than the aggregated histograms (whose latency histogram rounds to whole milliseconds, too
 * coarse for sub-millisecond latencies; the bench records latencies from "response" events instead).
 * Inside a worker thread autocannon skips aggregation anyway, so this is the shape it returns there.
 */
declare module "autocannon" {
  namespace autocannon {
    interface Options {
      url: string;
      connections?: number;
      /** Seconds. */
      duration?: number;
      method?: "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS";
      headers?: Record<string, string>;
      body?: string;
      /** Every response body that differs from this string is counted in `mismatches`. */
      expectBody?: string;
      /** Seconds to wait for a response before counting a timeout (and an error). */
      timeout?: number;
      /** A run before the measured one; its counters come back as `warmup`. */
      warmup?: { connections?: number; duration?: number };
      skipAggregateResult: true;
    }

    interface RawResult {
      totalCompletedRequests: number;
      totalRequests: number;
      totalBytes: number;
      /** Connection errors, timeouts included. */
      errors: number;
      timeouts: number;
      mismatches: number;
      non2xx: number;
      statusCodeStats: Record<string, { count: number }>;
      /** Seconds, rounded to 10 ms. */
      duration: number;
      start: Date;
      finish: Date;
      /** Set when `warmup` was given. */
      warmup?: RawResult;
    }

    interface Instance extends PromiseLike<RawResult> {
      /** Emitted for every response of the measured run (not the warm-up); `responseTime` is in ms, fractional. */
      on(event: "response", listener: (client: unknown, statusCode: number, resBytes: number, responseTime: number) => void): this;
      stop(): void;
    }
  }

  function autocannon(options: autocannon.Options): autocannon.Instance;

  export = autocannon;
}
