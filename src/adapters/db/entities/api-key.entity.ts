import { Column, CreateDateColumn, Entity, JoinColumn, ManyToOne, PrimaryGeneratedColumn } from "typeorm";
import { UserEntity } from "./user.entity.js";

@Entity({ name: "api_keys" })
export class ApiKeyEntity {
  @PrimaryGeneratedColumn("uuid")
  id!: string;

  @Column({ name: "user_id", type: "uuid" })
  userId!: string;

  @ManyToOne(() => UserEntity, { onDelete: "CASCADE" })
  @JoinColumn({ name: "user_id" })
  user?: UserEntity;

  @Column({ type: "varchar", length: 100 })
  name!: string;

  /** sha256 of the key, hex. Keys are random 190-bit strings, so a fast hash is enough to make a leaked table useless. */
  @Column({ name: "key_hash", type: "char", length: 64, unique: true })
  keyHash!: string;

  /** The first characters of the key, shown so that a user can tell keys apart. */
  @Column({ name: "key_prefix", type: "varchar", length: 12 })
  keyPrefix!: string;

  /** Whether the WebUI extension's legacy `Authorization: Bearer <hex username>` may name another user. */
  @Column({ name: "act_for_others", type: "boolean", default: false })
  actForOthers!: boolean;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  createdAt!: Date;

  @Column({ name: "revoked_at", type: "timestamptz", nullable: true })
  revokedAt!: Date | null;
}
