import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn } from "typeorm";

export const SYSTEM_CHECK_STATUSES = ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED"] as const;
export type SystemCheckStatus = (typeof SYSTEM_CHECK_STATUSES)[number];

export interface SystemCheckProbe {
  name: string;
  ok: boolean;
  latencyMs: number;
  detail?: string;
}

/** An operator-requested check, run by a worker, of every dependency as that worker sees it. */
@Entity({ name: "system_checks" })
export class SystemCheckEntity {
  @PrimaryGeneratedColumn("uuid")
  id!: string;

  @Column({ name: "requested_by", type: "uuid" })
  requestedBy!: string;

  @Column({ type: "enum", enum: SYSTEM_CHECK_STATUSES, enumName: "system_check_status", default: "QUEUED" })
  status!: SystemCheckStatus;

  @Column({ type: "jsonb", default: () => "'[]'" })
  probes!: SystemCheckProbe[];

  @Column({ name: "worker_id", type: "varchar", length: 128, nullable: true })
  workerId!: string | null;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  createdAt!: Date;

  @Column({ name: "finished_at", type: "timestamptz", nullable: true })
  finishedAt!: Date | null;
}
