import { Column, CreateDateColumn, Entity, Index, JoinColumn, ManyToOne, OneToMany, PrimaryGeneratedColumn, Unique, UpdateDateColumn } from "typeorm";
import { CHECKPOINT_STATUSES, CHECKPOINT_TYPES, type CheckpointSource, type CheckpointStatus, type CheckpointType } from "../../../domain/checkpoints.js";

/** Model files users bring. The bytes live in the object store under `prefix`; never in Diffgate. */
@Entity({ name: "checkpoints" })
@Index("IDX_checkpoints_created", ["createdAt", "id"])
export class CheckpointEntity {
  @PrimaryGeneratedColumn("uuid")
  id!: string;

  @Column({ name: "checkpoint_type", type: "enum", enum: CHECKPOINT_TYPES, enumName: "checkpoint_type" })
  type!: CheckpointType;

  @Column({ type: "enum", enum: CHECKPOINT_STATUSES, enumName: "checkpoint_status", default: "Initial" })
  status!: CheckpointStatus;

  /** `<type>/checkpoint/custom/<id>/` */
  @Column({ type: "text" })
  prefix!: string;

  @Column({ type: "varchar", length: 8 })
  source!: CheckpointSource;

  @Column({ type: "text", nullable: true })
  message!: string | null;

  @Column({ name: "creator_id", type: "uuid", nullable: true })
  creatorId!: string | null;

  /** Roles the checkpoint is shared with (the creator's roles at creation, as upstream). */
  @Column({ name: "allowed_roles", type: "text", array: true, default: () => "'{}'" })
  allowedRoles!: string[];

  @Column({ name: "failure_reason", type: "text", nullable: true })
  failureReason!: string | null;

  @OneToMany(() => CheckpointFileEntity, (f) => f.checkpoint)
  files?: CheckpointFileEntity[];

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  createdAt!: Date;

  @UpdateDateColumn({ name: "updated_at", type: "timestamptz" })
  updatedAt!: Date;
}

/** One file of a checkpoint. A name is unique per checkpoint type, by constraint. */
@Entity({ name: "checkpoint_files" })
@Unique("UQ_checkpoint_files_type_name", ["checkpointType", "name"])
export class CheckpointFileEntity {
  @PrimaryGeneratedColumn("uuid")
  id!: string;

  @Column({ name: "checkpoint_id", type: "uuid" })
  checkpointId!: string;

  @ManyToOne(() => CheckpointEntity, (c) => c.files, { onDelete: "CASCADE" })
  @JoinColumn({ name: "checkpoint_id" })
  checkpoint?: CheckpointEntity;

  @Column({ name: "checkpoint_type", type: "enum", enum: CHECKPOINT_TYPES, enumName: "checkpoint_type" })
  checkpointType!: CheckpointType;

  @Column({ type: "varchar", length: 255 })
  name!: string;

  /** Object key of the file. */
  @Column({ name: "object_key", type: "text" })
  objectKey!: string;

  /** The multipart upload while the file is being uploaded; null once complete. */
  @Column({ name: "upload_id", type: "text", nullable: true })
  uploadId!: string | null;

  @Column({ name: "parts_number", type: "integer", default: 0 })
  partsNumber!: number;

  @Column({ name: "source_url", type: "text", nullable: true })
  sourceUrl!: string | null;

  /** Size once the bytes really are in the store. */
  @Column({ name: "size_bytes", type: "bigint", nullable: true })
  sizeBytes!: string | null;

  @Column({ name: "position", type: "integer", default: 0 })
  position!: number;
}
