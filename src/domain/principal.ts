import type { PermissionSet } from "./permissions.js";

/** Who is calling, after authentication. */
export interface Principal {
  userId: string;
  username: string;
  roles: string[];
  permissions: PermissionSet;
  /** How the caller proved who they are. */
  via: "api-key" | "session" | "api-key+legacy-bearer";
  apiKeyId?: string;
}

/** Raw credentials as a transport found them. */
export interface Credentials {
  apiKey?: string;
  /** The value after "Bearer " in an Authorization header. */
  bearer?: string;
}
