import { Column, Entity, PrimaryColumn } from "typeorm";

/** Process-independent settings that every api process must share (e.g. the session signing secret). */
@Entity({ name: "system_settings" })
export class SystemSettingEntity {
  @PrimaryColumn({ type: "varchar", length: 64 })
  key!: string;

  @Column({ type: "text" })
  value!: string;
}
