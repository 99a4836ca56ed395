import { Column, CreateDateColumn, Entity, Index, JoinColumn, ManyToOne, OneToMany, PrimaryGeneratedColumn, Unique, UpdateDateColumn } from "typeorm";
import { DATASET_STATUSES, type DatasetStatus } from "../../../domain/datasets.js";

/** Training data sets. The files live in the object store under `dataset/<name>/`; never in Diffgate. */
@Entity({ name: "datasets" })
@Unique("UQ_datasets_name", ["name"])
@Index("IDX_datasets_created", ["createdAt", "id"])
export class DatasetEntity {
  @PrimaryGeneratedColumn("uuid")
  id!: string;

  /** Upstream's `dataset_name` (1..20, `^[A-Za-z][A-Za-z0-9_-]*$`), unique by constraint. */
  @Column({ type: "varchar", length: 20 })
  name!: string;

  @Column({ type: "enum", enum: DATASET_STATUSES, enumName: "dataset_status", default: "Initialed" })
  status!: DatasetStatus;

  /** Upstream's info `params` (e.g. `description`). */
  @Column({ type: "jsonb", default: () => "'{}'" })
  params!: Record<string, unknown>;

  @Column({ name: "creator_id", type: "uuid", nullable: true })
  creatorId!: string | null;

  /** Roles the dataset is shared with (the creator's roles at creation, as upstream). */
  @Column({ name: "allowed_roles", type: "text", array: true, default: () => "'{}'" })
  allowedRoles!: string[];

  @OneToMany(() => DatasetItemEntity, (i) => i.dataset)
  items?: DatasetItemEntity[];

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  createdAt!: Date;

  @UpdateDateColumn({ name: "updated_at", type: "timestamptz" })
  updatedAt!: Date;
}

/** One file of a dataset; a file name is unique per dataset, by constraint. */
@Entity({ name: "dataset_items" })
@Unique("UQ_dataset_items_dataset_filename", ["datasetId", "filename"])
export class DatasetItemEntity {
  @PrimaryGeneratedColumn("uuid")
  id!: string;

  @Column({ name: "dataset_id", type: "uuid" })
  datasetId!: string;

  @ManyToOne(() => DatasetEntity, (d) => d.items, { onDelete: "CASCADE" })
  @JoinColumn({ name: "dataset_id" })
  dataset?: DatasetEntity;

  /** The uploaded file's name (upstream's `original_file_name`); the object key ends with it. */
  @Column({ type: "varchar", length: 255 })
  filename!: string;

  /** A label; defaults to the file name. */
  @Column({ type: "varchar", length: 255 })
  name!: string;

  /** e.g. "image" */
  @Column({ name: "item_type", type: "varchar", length: 64 })
  type!: string;

  @Column({ type: "jsonb", default: () => "'{}'" })
  params!: Record<string, unknown>;

  @Column({ name: "object_key", type: "text" })
  objectKey!: string;

  @Column({ name: "position", type: "integer", default: 0 })
  position!: number;
}
