import type { DataSource } from "typeorm";
import { z } from "zod";
import { SystemCheckEntity, type SystemCheckStatus } from "../adapters/db/entities/system-check.entity.js";
import { DomainError } from "../domain/errors.js";
import type { Principal } from "../domain/principal.js";
import { parseInput } from "../domain/validation.js";
import type { JobQueue } from "../../queues/job-queue.js";
import { runProbes, type DependencyProbe } from "./dependency-probes.js";
import type { EventLog } from "./event-log.js";

const PROBE_TIMEOUT_MS = 5000;

export type SystemCheckView = Pick<SystemCheckEntity, "id" | "status" | "probes" | "workerId" | "createdAt" | "finishedAt">;

/**
 * An operator asks a worker to check every dependency as that worker sees it (database, Redis,
 * object store, SageMaker). It runs through the queue like every other job, so it also proves that
 * the queue, a worker and the event stream work end to end.
 */
export class SystemCheckService {
  constructor(
    private readonly db: DataSource,
    private readonly events: EventLog,
    private readonly queue: JobQueue,
    private readonly probes: DependencyProbe[],
    private readonly workerId: string,
  ) {}

  private requireOperator(principal: Principal) {
    if (!principal.permissions.allows("user", "all")) throw DomainError.forbidden("system checks need user:all");
  }

  async request(principal: Principal): Promise<SystemCheckView> {
    this.requireOperator(principal);
    const check = await this.events.transaction(async (tx, events) => {
      const saved = await tx.save(tx.create(SystemCheckEntity, { requestedBy: principal.userId, status: "QUEUED", probes: [] }));
      await events.openStream(saved.id, "system_check", principal.userId);
      await events.append(saved.id, { type: "status", data: { status: "QUEUED" } });
      return saved;
    });
    await this.queue.enqueue("system.check", { checkId: check.id }, check.id);
    return check;
  }

  async get(principal: Principal, id: unknown): Promise<SystemCheckView> {
    this.requireOperator(principal);
    const checkId = parseInput(z.uuid({ error: "must be a system check id (a UUID)" }), id, "id");
    const check = await this.db.getRepository(SystemCheckEntity).findOneBy({ id: checkId });
    if (!check) throw DomainError.notFound(`system check ${checkId} not found`);
    return check;
  }

  /** The job body. Safe to run again after a crash: a finished check is left alone. */
  async run(checkId: string): Promise<void> {
    const started = await this.events.transaction(async (tx, events) => {
      const check = await tx.getRepository(SystemCheckEntity).createQueryBuilder("c").setLock("pessimistic_write").where("c.id = :id", { id: checkId }).getOne();
      if (!check || check.status === "SUCCEEDED" || check.status === "FAILED") return false;
      if (check.status !== "RUNNING") {
        await tx.update(SystemCheckEntity, { id: checkId }, { status: "RUNNING", workerId: this.workerId });
        await events.append(checkId, { type: "status", data: { status: "RUNNING", workerId: this.workerId } });
      }
      return true;
    });
    if (!started) return;

    const results = await runProbes(this.probes, PROBE_TIMEOUT_MS);
    for (const r of results) await this.events.append(checkId, { type: "probe", data: { ...r } });

    const status: SystemCheckStatus = results.every((r) => r.ok) ? "SUCCEEDED" : "FAILED";
    await this.events.transaction(async (tx, events) => {
      await tx.update(SystemCheckEntity, { id: checkId }, { status, probes: results, finishedAt: new Date() });
      await events.append(checkId, { type: "status", data: { status, failed: results.filter((r) => !r.ok).map((r) => r.name) }, terminal: true });
    });
  }
}
