import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { JobObserver } from "../../queues/job-worker.js";

/** Prometheus metrics of one process. A registry per instance, so that tests can run several. */
export class Metrics implements JobObserver {
  readonly registry = new Registry();
  readonly httpDuration: Histogram<"method" | "route" | "status">;
  readonly jobDuration: Histogram<"name" | "outcome">;
  readonly graphqlOperations: Counter<"type" | "outcome">;

  constructor(options: { queueDepth?: () => Promise<Record<string, number>>; activeSubscriptions?: () => number } = {}) {
    collectDefaultMetrics({ register: this.registry, prefix: "diffgate_" });
    this.httpDuration = new Histogram({
      name: "diffgate_http_request_duration_seconds",
      help: "HTTP request latency by route template",
      labelNames: ["method", "route", "status"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [this.registry],
    });
    this.jobDuration = new Histogram({
      name: "diffgate_job_duration_seconds",
      help: "Queue job processing time by job name and outcome",
      labelNames: ["name", "outcome"],
      buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600],
      registers: [this.registry],
    });
    this.graphqlOperations = new Counter({
      name: "diffgate_graphql_operations_total",
      help: "GraphQL operations by type and outcome",
      labelNames: ["type", "outcome"],
      registers: [this.registry],
    });
    const { queueDepth, activeSubscriptions } = options;
    if (queueDepth) {
      new Gauge({
        name: "diffgate_queue_jobs",
        help: "Jobs in the work queue by state",
        labelNames: ["state"],
        registers: [this.registry],
        async collect() {
          try {
            for (const [state, n] of Object.entries(await queueDepth())) this.set({ state }, n);
          } catch {
            // Redis down: leave the last values; /readyz reports the outage.
          }
        },
      });
    }
    if (activeSubscriptions) {
      new Gauge({
        name: "diffgate_event_streams_followed",
        help: "Event streams this process follows for subscribers",
        registers: [this.registry],
        collect() {
          this.set(activeSubscriptions());
        },
      });
    }
  }

  jobFinished(name: string, outcome: "completed" | "failed", seconds: number): void {
    this.jobDuration.observe({ name, outcome }, seconds);
  }
}
