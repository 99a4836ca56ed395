import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn } from "typeorm";

@Entity({ name: "roles" })
export class RoleEntity {
  @PrimaryGeneratedColumn("uuid")
  id!: string;

  @Column({ type: "varchar", length: 64, unique: true })
  name!: string;

  @Column({ type: "text", array: true, default: () => "'{}'" })
  permissions!: string[];

  @Column({ name: "creator_id", type: "uuid", nullable: true })
  creatorId!: string | null;

  /** Built-in roles (the admin role) cannot be deleted or narrowed. */
  @Column({ type: "boolean", default: false })
  builtin!: boolean;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  createdAt!: Date;
}
