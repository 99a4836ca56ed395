import { Column, CreateDateColumn, Entity, JoinColumn, ManyToOne, PrimaryColumn } from "typeorm";

/** One stream per job; `lastSeq` is bumped under the row lock in the transaction that appends. */
@Entity({ name: "event_streams" })
export class EventStreamEntity {
  @PrimaryColumn({ type: "uuid" })
  id!: string;

  @Column({ type: "varchar", length: 32 })
  kind!: string;

  @Column({ name: "owner_id", type: "uuid", nullable: true })
  ownerId!: string | null;

  @Column({ name: "last_seq", type: "integer", default: 0 })
  lastSeq!: number;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  createdAt!: Date;
}

@Entity({ name: "job_events" })
export class JobEventEntity {
  @PrimaryColumn({ name: "stream_id", type: "uuid" })
  streamId!: string;

  @ManyToOne(() => EventStreamEntity, { onDelete: "CASCADE" })
  @JoinColumn({ name: "stream_id" })
  stream?: EventStreamEntity;

  @PrimaryColumn({ type: "integer" })
  seq!: number;

  @Column({ type: "varchar", length: 64 })
  type!: string;

  @Column({ type: "jsonb", default: () => "'{}'" })
  data!: Record<string, unknown>;

  @Column({ type: "boolean", default: false })
  terminal!: boolean;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  createdAt!: Date;
}
