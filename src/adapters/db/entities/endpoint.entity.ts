import { Column, CreateDateColumn, Entity, Index, PrimaryGeneratedColumn, UpdateDateColumn } from "typeorm";
import { ENDPOINT_PROVIDERS, ENDPOINT_STATUSES, ENDPOINT_TYPES, type EndpointProvider, type EndpointStatus, type EndpointType } from "../../../domain/endpoints.js";

/**
 * A SageMaker endpoint deployed through Diffgate, or a self-hosted WebUI server registered with it
 * (provider webui: base URL and credentials instead of SageMaker resources). A name is unique among
 * endpoints not yet deleted.
 */
@Entity({ name: "endpoints" })
@Index("UQ_endpoints_live_name", ["name"], { unique: true, where: `"status" <> 'Deleted'` })
export class EndpointEntity {
  @PrimaryGeneratedColumn("uuid")
  id!: string;

  @Column({ type: "varchar", length: 63 })
  name!: string;

  @Column({ type: "enum", enum: ENDPOINT_PROVIDERS, enumName: "endpoint_provider", default: "sagemaker" })
  provider!: EndpointProvider;

  /** WebUI servers: where `/sdapi/v1` is served. */
  @Column({ name: "base_url", type: "text", nullable: true })
  baseUrl!: string | null;

  /** WebUI servers: the `--api-auth` user and password, encrypted (never returned). */
  @Column({ name: "credentials_sealed", type: "text", nullable: true })
  credentialsSealed!: string | null;

  /** WebUI servers: the checkpoint titles the server offered at its last health check. */
  @Column({ name: "server_models", type: "text", array: true, default: () => "'{}'" })
  serverModels!: string[];

  /** WebUI servers: health checks failed in a row (reset by one that succeeds). */
  @Column({ name: "health_failures", type: "integer", default: 0 })
  healthFailures!: number;

  @Column({ name: "last_health_at", type: "timestamptz", nullable: true })
  lastHealthAt!: Date | null;

  @Column({ name: "endpoint_type", type: "enum", enum: ENDPOINT_TYPES, enumName: "endpoint_type" })
  endpointType!: EndpointType;

  @Column({ name: "instance_type", type: "varchar", length: 32 })
  instanceType!: string;

  @Column({ name: "initial_instance_count", type: "integer" })
  initialInstanceCount!: number;

  @Column({ type: "boolean" })
  autoscaling!: boolean;

  @Column({ name: "min_instance_number", type: "integer" })
  minInstanceNumber!: number;

  @Column({ name: "max_instance_number", type: "integer" })
  maxInstanceNumber!: number;

  @Column({ name: "current_instance_count", type: "integer", default: 0 })
  currentInstanceCount!: number;

  @Column({ type: "enum", enum: ENDPOINT_STATUSES, enumName: "endpoint_status", default: "Creating" })
  status!: EndpointStatus;

  @Column({ name: "owner_roles", type: "text", array: true, default: () => "'{}'" })
  ownerRoles!: string[];

  @Column({ name: "creator_id", type: "uuid", nullable: true })
  creatorId!: string | null;

  @Column({ name: "image_uri", type: "text" })
  imageUri!: string;

  @Column({ name: "custom_image", type: "boolean", default: false })
  customImage!: boolean;

  @Column({ name: "model_name", type: "varchar", length: 63 })
  modelName!: string;

  @Column({ name: "config_name", type: "varchar", length: 63 })
  configName!: string;

  @Column({ name: "failure_reason", type: "text", nullable: true })
  failureReason!: string | null;

  /** How many times the deploy job has looked at SageMaker, for its backoff. */
  @Column({ name: "status_checks", type: "integer", default: 0 })
  statusChecks!: number;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  createdAt!: Date;

  @Column({ name: "in_service_at", type: "timestamptz", nullable: true })
  inServiceAt!: Date | null;

  @Column({ name: "deleted_at", type: "timestamptz", nullable: true })
  deletedAt!: Date | null;

  @UpdateDateColumn({ name: "updated_at", type: "timestamptz" })
  updatedAt!: Date;
}
