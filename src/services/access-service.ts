import { randomBytes } from "node:crypto";
import { z } from "zod";
import { In, type DataSource, type EntityManager } from "typeorm";
import { ApiKeyEntity } from "../adapters/db/entities/api-key.entity.js";
import { RoleEntity } from "../adapters/db/entities/role.entity.js";
import { SystemSettingEntity } from "../adapters/db/entities/system-setting.entity.js";
import { UserEntity } from "../adapters/db/entities/user.entity.js";
import { apiKeyPrefix, generateApiKey, hashApiKey } from "../adapters/security/api-key-codec.js";
import { burnPasswordCheck, hashPassword, verifyPassword } from "../adapters/security/password-hasher.js";
import { SessionTokens } from "../adapters/security/session-tokens.js";
import { DomainError } from "../domain/errors.js";
import { ADMIN_ROLE, ADMIN_ROLE_PERMISSIONS, ALL_PERMISSIONS, PermissionSet, type Permission } from "../domain/permissions.js";
import type { Credentials, Principal } from "../domain/principal.js";
import { parseInput } from "../domain/validation.js";

export const usernameSchema = z
  .string({ error: "must be a string" })
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$/, { error: "must be 1-64 characters: letters, digits, '_', '.', '@' or '-', starting with a letter or digit" });
const passwordSchema = z
  .string({ error: "must be a string" })
  .min(8, { error: "must be at least 8 characters" })
  .max(1024, { error: "must be at most 1024 characters" });
export const roleNameSchema = z
  .string({ error: "must be a string" })
  .regex(/^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$/, { error: "must be 1-64 characters: letters, digits, spaces, '_', '.' or '-', starting with a letter or digit" });
const permissionSchema = z.enum(ALL_PERMISSIONS as [Permission, ...Permission[]], {
  error: (issue) => `${JSON.stringify(issue.input)} is not a permission; use <resource>:<action> with resource one of train, checkpoint, inference, sagemaker_endpoint, user, role and action one of all, create, list`,
});

const createUserSchema = z.object({
  username: usernameSchema,
  password: passwordSchema.optional(),
  roles: z.array(roleNameSchema).max(20, { error: "at most 20 roles" }).optional(),
  initial: z.boolean({ error: "must be true or false" }).optional(),
  creator: z.string().optional(),
});
const usernameListSchema = z.array(usernameSchema, { error: "must be a list of usernames" }).min(1, { error: "must name at least one user" }).max(100, { error: "at most 100 users at once" });
const createRoleSchema = z.object({
  roleName: roleNameSchema,
  permissions: z.array(permissionSchema, { error: "must be a list of permissions" }).min(1, { error: "must grant at least one permission" }).max(20, { error: "at most 20 permissions" }),
  creator: z.string().optional(),
});
const roleNameListSchema = z.array(roleNameSchema, { error: "must be a list of role names" }).min(1, { error: "must name at least one role" }).max(100, { error: "at most 100 roles at once" });
const createApiKeySchema = z.object({
  name: z.string({ error: "must be a string" }).trim().min(1, { error: "must not be empty" }).max(100, { error: "must be at most 100 characters" }),
  username: usernameSchema.optional(),
  actForOthers: z.boolean({ error: "must be true or false" }).optional(),
});

export interface UserView {
  id: string;
  username: string;
  roles: string[];
  permissions: Permission[];
  creator: string | null;
  createdAt: Date;
}

export interface RoleView {
  id: string;
  name: string;
  permissions: Permission[];
  creator: string | null;
  builtin: boolean;
  createdAt: Date;
}

export interface ApiKeyView {
  id: string;
  name: string;
  prefix: string;
  owner: string;
  actForOthers: boolean;
  createdAt: Date;
  revokedAt: Date | null;
}

interface PrincipalRow {
  user_id: string;
  username: string;
  role_name: string | null;
  permissions: string[] | null;
}

const SESSION_SECRET_SETTING = "session_secret";
const LEGACY_BEARER = /^(?:[0-9A-F]{2})*$/;

function principalFrom(rows: PrincipalRow[], via: Principal["via"], apiKeyId?: string): Principal {
  const first = rows[0]!;
  const roles = rows.flatMap((r) => (r.role_name ? [r.role_name] : [])).sort();
  const permissions = new PermissionSet(rows.flatMap((r) => r.permissions ?? []));
  return { userId: first.user_id, username: first.username, roles, permissions, via, ...(apiKeyId ? { apiKeyId } : {}) };
}

function sameUserOrForbidden(principal: Principal, creator: string | undefined) {
  if (creator !== undefined && creator !== principal.username) {
    throw DomainError.forbidden(`creator "${creator}" must be the calling user "${principal.username}"; identities are taken from credentials, not from the body`);
  }
}

/** Users, roles, API keys and sessions: who may call, and what they may do. */
export class AccessService {
  private tokens: SessionTokens | undefined;

  constructor(
    private readonly db: DataSource,
    private readonly sessionTtlSeconds: number,
  ) {}

  // ---------------------------------------------------------------- start-up

  /**
   * First-start bootstrap (run under the migration lock): the built-in admin role, the admin user,
   * and an API key for it. Returns the generated key when one was created, so that the caller can
   * hand it to the operator once.
   */
  async bootstrap(options: { adminUsername: string; apiKey?: string; sessionSecret?: string }): Promise<{ adminCreated: boolean; generatedApiKey?: string }> {
    const result = await this.db.transaction(async (tx) => {
      let adminRole = await tx.findOneBy(RoleEntity, { name: ADMIN_ROLE });
      if (!adminRole) {
        adminRole = await tx.save(tx.create(RoleEntity, { name: ADMIN_ROLE, permissions: ADMIN_ROLE_PERMISSIONS, builtin: true, creatorId: null }));
      } else if (!adminRole.builtin || ADMIN_ROLE_PERMISSIONS.some((p) => !adminRole!.permissions.includes(p))) {
        adminRole.builtin = true;
        adminRole.permissions = ADMIN_ROLE_PERMISSIONS;
        await tx.save(adminRole);
      }

      let adminCreated = false;
      let admin = await tx.findOneBy(UserEntity, { username: options.adminUsername });
      if (!admin && (await tx.count(UserEntity)) === 0) {
        admin = await tx.save(tx.create(UserEntity, { username: options.adminUsername, passwordHash: null, creatorId: null }));
        await tx.query(`INSERT INTO user_roles (user_id, role_id) VALUES ($1, $2)`, [admin.id, adminRole.id]);
        adminCreated = true;
      }

      let generatedApiKey: string | undefined;
      if (admin && options.apiKey) {
        const hash = hashApiKey(options.apiKey);
        const existing = await tx.findOneBy(ApiKeyEntity, { keyHash: hash });
        if (!existing) {
          await tx.save(tx.create(ApiKeyEntity, { userId: admin.id, name: "API_KEY from configuration", keyHash: hash, keyPrefix: apiKeyPrefix(options.apiKey), actForOthers: true }));
        }
      } else if (admin && adminCreated) {
        generatedApiKey = generateApiKey();
        await tx.save(tx.create(ApiKeyEntity, { userId: admin.id, name: "first-start admin key", keyHash: hashApiKey(generatedApiKey), keyPrefix: apiKeyPrefix(generatedApiKey), actForOthers: true }));
      }

      await tx.query(`INSERT INTO system_settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`, [SESSION_SECRET_SETTING, randomBytes(48).toString("base64url")]);
      return { adminCreated, ...(generatedApiKey ? { generatedApiKey } : {}) };
    });
    await this.loadSessionSecret(options.sessionSecret);
    return result;
  }

  /** For processes that did not run the bootstrap themselves. */
  async loadSessionSecret(sessionSecret?: string): Promise<void> {
    const secret = sessionSecret ?? (await this.db.getRepository(SystemSettingEntity).findOneByOrFail({ key: SESSION_SECRET_SETTING })).value;
    this.tokens = new SessionTokens(secret, this.sessionTtlSeconds);
    this.secret = secret;
  }

  /** The session secret (configured or generated at first start), for keys derived from it. */
  sessionSecret(): string {
    if (this.secret === undefined) throw new Error("AccessService used before bootstrap()/loadSessionSecret()");
    return this.secret;
  }

  private secret: string | undefined;

  private get sessionTokens(): SessionTokens {
    if (!this.tokens) throw new Error("AccessService used before bootstrap()/loadSessionSecret()");
    return this.tokens;
  }

  // ---------------------------------------------------------------- authentication

  async authenticate(credentials: Credentials): Promise<Principal> {
    const apiKey = credentials.apiKey?.trim() || undefined;
    const bearer = credentials.bearer?.trim();

    if (bearer && SessionTokens.looksLikeToken(bearer)) {
      const claims = await this.sessionTokens.verify(bearer);
      if (!claims) throw DomainError.unauthenticated("the session token is invalid or expired; call login again");
      const tokenUser = await this.principalForUser(claims.userId, "session");
      if (!tokenUser) throw DomainError.unauthenticated("the session token's user no longer exists");
      if (apiKey) {
        const keyOwner = await this.principalForKey(apiKey);
        if (keyOwner.userId !== tokenUser.userId && !(await this.keyMayActForOthers(keyOwner))) {
          throw DomainError.forbidden("the API key and the session token belong to different users");
        }
      }
      return tokenUser;
    }

    if (!apiKey) {
      if (bearer) throw DomainError.unauthenticated("the bearer token is not a session token; legacy bearer tokens need an x-api-key");
      throw DomainError.unauthenticated("missing credentials: send an x-api-key header or an Authorization: Bearer session token");
    }

    const keyOwner = await this.principalForKey(apiKey);
    if (bearer === undefined || bearer === "") return keyOwner;

    // The WebUI extension's legacy bearer: uppercase hex of a username, with no secret in it.
    if (!LEGACY_BEARER.test(bearer)) throw DomainError.unauthenticated("the bearer token is neither a session token nor an uppercase-hex username");
    const named = Buffer.from(bearer, "hex").toString("utf8");
    if (named === keyOwner.username) return keyOwner;
    if (!(await this.keyMayActForOthers(keyOwner))) {
      throw DomainError.forbidden(`this API key belongs to "${keyOwner.username}" and may not act for other users`);
    }
    // Only a well-formed username can exist (and a NUL in a query string is a database error).
    if (!usernameSchema.safeParse(named).success) throw DomainError.forbidden(`the bearer names ${JSON.stringify(named)}, which is not a valid username`);
    const user = await this.db.getRepository(UserEntity).findOneBy({ username: named });
    if (!user) throw DomainError.forbidden(`the bearer names user "${named}", who does not exist`);
    const acting = await this.principalForUser(user.id, "api-key+legacy-bearer");
    if (!acting) throw DomainError.forbidden(`the bearer names user "${named}", who does not exist`);
    return { ...acting, ...(keyOwner.apiKeyId ? { apiKeyId: keyOwner.apiKeyId } : {}) };
  }

  private async keyMayActForOthers(keyOwner: Principal): Promise<boolean> {
    if (!keyOwner.apiKeyId) return false;
    const key = await this.db.getRepository(ApiKeyEntity).findOneBy({ id: keyOwner.apiKeyId });
    return !!key?.actForOthers && keyOwner.permissions.allows("user", "all");
  }

  private async principalForKey(apiKey: string): Promise<Principal> {
    const rows: Array<PrincipalRow & { key_id: string }> = await this.db.query(
      `SELECT k.id AS key_id, u.id AS user_id, u.username, r.name AS role_name, r.permissions
         FROM api_keys k
         JOIN users u ON u.id = k.user_id
         LEFT JOIN user_roles ur ON ur.user_id = u.id
         LEFT JOIN roles r ON r.id = ur.role_id
        WHERE k.key_hash = $1 AND k.revoked_at IS NULL`,
      [hashApiKey(apiKey)],
    );
    if (rows.length === 0) throw DomainError.forbidden("the API key is not valid (unknown or revoked)");
    return principalFrom(rows, "api-key", rows[0]!.key_id);
  }

  private async principalForUser(userId: string, via: Principal["via"]): Promise<Principal | undefined> {
    const rows: PrincipalRow[] = await this.db.query(
      `SELECT u.id AS user_id, u.username, r.name AS role_name, r.permissions
         FROM users u
         LEFT JOIN user_roles ur ON ur.user_id = u.id
         LEFT JOIN roles r ON r.id = ur.role_id
        WHERE u.id = $1`,
      [userId],
    );
    return rows.length ? principalFrom(rows, via) : undefined;
  }

  async login(input: { username: unknown; password: unknown }): Promise<{ token: string; expiresAt: Date; user: UserView }> {
    const { username, password } = parseInput(z.object({ username: z.string({ error: "must be a string" }).min(1).max(64), password: z.string({ error: "must be a string" }).min(1).max(1024) }), input);
    const user = await this.db.getRepository(UserEntity).findOneBy({ username });
    if (!user || !user.passwordHash) {
      await burnPasswordCheck(password);
      throw DomainError.unauthenticated("invalid username or password");
    }
    if (!(await verifyPassword(password, user.passwordHash))) throw DomainError.unauthenticated("invalid username or password");
    const { token, expiresAt } = await this.sessionTokens.issue(user.id);
    return { token, expiresAt, user: (await this.userViews({ ids: [user.id] }))[0]! };
  }

  // ---------------------------------------------------------------- users

  async me(principal: Principal): Promise<UserView> {
    const [view] = await this.userViews({ ids: [principal.userId] });
    if (!view) throw DomainError.unauthenticated("the calling user no longer exists");
    return view;
  }

  /** Everyone sees themselves; `user:list` adds users they created; `user:all` sees everyone. */
  async listUsers(principal: Principal, filter: { username?: unknown } = {}): Promise<UserView[]> {
    const username = filter.username === undefined ? undefined : parseInput(usernameSchema, filter.username, "username");
    const all = principal.permissions.allows("user", "all");
    const list = principal.permissions.allows("user", "list");
    return this.userViews({
      ...(username ? { username } : {}),
      ...(all ? {} : { visibleTo: principal.userId, includeCreated: list }),
    });
  }

  private async userViews(filter: { ids?: string[]; username?: string; visibleTo?: string; includeCreated?: boolean }): Promise<UserView[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (filter.ids) where.push(`u.id = ANY($${params.push(filter.ids)})`);
    if (filter.username) where.push(`u.username = $${params.push(filter.username)}`);
    if (filter.visibleTo) {
      const me = `$${params.push(filter.visibleTo)}`;
      where.push(filter.includeCreated ? `(u.id = ${me} OR u.creator_id = ${me})` : `u.id = ${me}`);
    }
    const rows: Array<{ id: string; username: string; creator: string | null; created_at: Date; roles: string[]; permissions: string[] }> = await this.db.query(
      `SELECT u.id, u.username, c.username AS creator, u.created_at,
              COALESCE(array_agg(DISTINCT r.name) FILTER (WHERE r.name IS NOT NULL), '{}') AS roles,
              COALESCE((SELECT array_agg(DISTINCT p ORDER BY p) FROM user_roles ur2 JOIN roles r2 ON r2.id = ur2.role_id, unnest(r2.permissions) p WHERE ur2.user_id = u.id), '{}') AS permissions
         FROM users u
         LEFT JOIN users c ON c.id = u.creator_id
         LEFT JOIN user_roles ur ON ur.user_id = u.id
         LEFT JOIN roles r ON r.id = ur.role_id
        ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
        GROUP BY u.id, c.username
        ORDER BY u.username`,
      params,
    );
    return rows.map((r) => ({ id: r.id, username: r.username, roles: [...r.roles].sort(), permissions: r.permissions as Permission[], creator: r.creator, createdAt: r.created_at }));
  }

  /**
   * Creates a user, or updates one (upstream's upsert). `initial` is accepted for the WebUI
   * extension's bootstrap call and grants nothing: repeating it for oneself is a no-op.
   */
  async createUser(principal: Principal, input: unknown): Promise<{ user: UserView; created: boolean }> {
    const v = parseInput(createUserSchema.strict(), input);
    sameUserOrForbidden(principal, v.creator);

    if (v.initial) {
      const self = await this.db.getRepository(UserEntity).findOneBy({ username: v.username });
      if (self && self.id === principal.userId) return { user: await this.me(principal), created: false };
    }
    if (!principal.permissions.allows("user", "create")) {
      throw DomainError.forbidden(`user "${principal.username}" does not have permission to manage users (needs user:create or user:all)`);
    }

    const passwordHash = v.password ? await hashPassword(v.password) : undefined;
    try {
      return await this.db.transaction(async (tx) => {
        const existing = await tx.getRepository(UserEntity).createQueryBuilder("u").setLock("pessimistic_write").where("u.username = :n", { n: v.username }).getOne();
        if (existing && existing.id !== principal.userId && existing.creatorId !== principal.userId && !principal.permissions.allows("user", "all")) {
          throw DomainError.forbidden(`username "${v.username}" already exists and was created by another user; changing it needs user:all`);
        }
        const roles = v.roles ? await this.rolesByName(tx, v.roles, "roles") : undefined;
        for (const role of roles ?? []) {
          for (const p of role.permissions) {
            if (!principal.permissions.canGrant(p as Permission)) {
              throw DomainError.forbidden(`you cannot assign role "${role.name}": it grants ${p}, which you do not hold`);
            }
          }
        }
        let user: UserEntity;
        if (existing) {
          user = existing;
          if (passwordHash) user.passwordHash = passwordHash;
          await tx.save(user);
        } else {
          user = await tx.save(tx.create(UserEntity, { username: v.username, passwordHash: passwordHash ?? null, creatorId: principal.userId }));
        }
        if (roles) {
          await tx.query(`DELETE FROM user_roles WHERE user_id = $1`, [user.id]);
          for (const role of roles) await tx.query(`INSERT INTO user_roles (user_id, role_id) VALUES ($1, $2)`, [user.id, role.id]);
        }
        return { id: user.id, created: !existing };
      }).then(async ({ id, created }) => ({ user: (await this.userViews({ ids: [id] }))[0]!, created }));
    } catch (e) {
      throw uniqueViolationAsConflict(e, `username "${v.username}" was created concurrently; retry`, "username");
    }
  }

  async deleteUsers(principal: Principal, usernames: unknown): Promise<string[]> {
    const names = [...new Set(parseInput(usernameListSchema, usernames, "usernames"))];
    if (!principal.permissions.allows("user", "create")) {
      throw DomainError.forbidden(`user "${principal.username}" does not have permission to manage users (needs user:create or user:all)`);
    }
    return this.db.transaction(async (tx) => {
      const users = await tx.find(UserEntity, { where: { username: In(names) }, lock: { mode: "pessimistic_write" } });
      for (const u of users) {
        if (u.id === principal.userId) throw DomainError.badInput("you cannot delete yourself", "usernames");
        if (u.creatorId !== principal.userId && !principal.permissions.allows("user", "all")) {
          throw DomainError.forbidden(`user "${u.username}" was created by another user; deleting it needs user:all`);
        }
      }
      if (users.length === 0) return [];
      const ids = users.map((u) => u.id);
      const [{ deleting, remaining }] = (await tx.query(
        `SELECT count(DISTINCT ur.user_id) FILTER (WHERE ur.user_id = ANY($1))::int AS deleting,
                count(DISTINCT ur.user_id) FILTER (WHERE NOT (ur.user_id = ANY($1)))::int AS remaining
           FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE r.builtin`,
        [ids],
      )) as [{ deleting: number; remaining: number }];
      if (deleting > 0 && remaining === 0) throw DomainError.conflict(`deleting these users would leave nobody with the "${ADMIN_ROLE}" role`, "usernames");
      await tx.query(`DELETE FROM users WHERE id = ANY($1)`, [ids]);
      return users.map((u) => u.username).sort();
    });
  }

  // ---------------------------------------------------------------- roles

  private async rolesByName(tx: EntityManager, names: string[], field: string): Promise<RoleEntity[]> {
    const unique = [...new Set(names)];
    const found = unique.length ? await tx.find(RoleEntity, { where: { name: In(unique) } }) : [];
    const missing = unique.filter((n) => !found.some((r) => r.name === n));
    if (missing.length) throw DomainError.badInput(`role(s) ${missing.map((m) => `"${m}"`).join(", ")} do not exist`, field);
    return found;
  }

  /** `role:all` sees every role; `role:list` the ones they created; everyone sees their own roles. */
  async listRoles(principal: Principal, filter: { role?: unknown } = {}): Promise<RoleView[]> {
    const role = filter.role === undefined ? undefined : parseInput(roleNameSchema, filter.role, "role");
    const params: unknown[] = [];
    const where: string[] = [];
    if (role) where.push(`r.name = $${params.push(role)}`);
    if (!principal.permissions.allows("role", "all")) {
      const me = `$${params.push(principal.userId)}`;
      const mine = `r.id IN (SELECT role_id FROM user_roles WHERE user_id = ${me})`;
      where.push(principal.permissions.allows("role", "list") ? `(${mine} OR r.creator_id = ${me})` : mine);
    }
    const rows: Array<{ id: string; name: string; permissions: string[]; creator: string | null; builtin: boolean; created_at: Date }> = await this.db.query(
      `SELECT r.id, r.name, r.permissions, c.username AS creator, r.builtin, r.created_at
         FROM roles r LEFT JOIN users c ON c.id = r.creator_id
        ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
        ORDER BY r.name`,
      params,
    );
    return rows.map((r) => ({ id: r.id, name: r.name, permissions: [...r.permissions].sort() as Permission[], creator: r.creator, builtin: r.builtin, createdAt: r.created_at }));
  }

  async createRole(principal: Principal, input: unknown): Promise<{ role: RoleView; created: boolean }> {
    const v = parseInput(createRoleSchema.strict(), input);
    sameUserOrForbidden(principal, v.creator);
    if (!principal.permissions.allows("role", "create")) {
      throw DomainError.forbidden(`user "${principal.username}" does not have permission to create roles (needs role:create or role:all)`);
    }
    const permissions = [...new Set(v.permissions)].sort();
    const ungrantable = permissions.filter((p) => !principal.permissions.canGrant(p));
    if (ungrantable.length) throw DomainError.forbidden(`you cannot create a role with permission(s) [${ungrantable.join(", ")}], which you do not hold`);
    try {
      const { id, created } = await this.db.transaction(async (tx) => {
        const existing = await tx.getRepository(RoleEntity).createQueryBuilder("r").setLock("pessimistic_write").where("r.name = :n", { n: v.roleName }).getOne();
        if (existing?.builtin) throw DomainError.forbidden(`the built-in role "${existing.name}" cannot be changed`);
        if (existing && existing.creatorId !== principal.userId && !principal.permissions.allows("role", "all")) {
          throw DomainError.forbidden(`role "${existing.name}" was created by another user; changing it needs role:all`);
        }
        if (existing) {
          existing.permissions = permissions;
          await tx.save(existing);
          return { id: existing.id, created: false };
        }
        const role = await tx.save(tx.create(RoleEntity, { name: v.roleName, permissions, creatorId: principal.userId, builtin: false }));
        return { id: role.id, created: true };
      });
      const [role] = (await this.listRoles({ ...principal, permissions: new PermissionSet(["role:all"]) }, {})).filter((r) => r.id === id);
      return { role: role!, created };
    } catch (e) {
      throw uniqueViolationAsConflict(e, `role "${v.roleName}" was created concurrently; retry`, "roleName");
    }
  }

  async deleteRoles(principal: Principal, roleNames: unknown): Promise<string[]> {
    const names = [...new Set(parseInput(roleNameListSchema, roleNames, "roleNames"))];
    if (!principal.permissions.allows("role", "create")) {
      throw DomainError.forbidden(`user "${principal.username}" does not have permission to delete roles (needs role:create or role:all)`);
    }
    return this.db.transaction(async (tx) => {
      const roles = await tx.find(RoleEntity, { where: { name: In(names) }, lock: { mode: "pessimistic_write" } });
      for (const r of roles) {
        if (r.builtin) throw DomainError.badInput("cannot delete default role", "roleNames");
        if (r.creatorId !== principal.userId && !principal.permissions.allows("role", "all")) {
          throw DomainError.forbidden(`role "${r.name}" was created by another user; deleting it needs role:all`);
        }
      }
      if (roles.length) await tx.query(`DELETE FROM roles WHERE id = ANY($1)`, [roles.map((r) => r.id)]);
      return roles.map((r) => r.name).sort();
    });
  }

  // ---------------------------------------------------------------- API keys

  /** Creates a key; the plaintext is returned here once and never stored. */
  async createApiKey(principal: Principal, input: unknown): Promise<{ apiKey: string; key: ApiKeyView }> {
    const v = parseInput(createApiKeySchema.strict(), input);
    const isAdmin = principal.permissions.allows("user", "all");
    let ownerId = principal.userId;
    if (v.username && v.username !== principal.username) {
      if (!isAdmin) throw DomainError.forbidden("creating API keys for other users needs user:all");
      const owner = await this.db.getRepository(UserEntity).findOneBy({ username: v.username });
      if (!owner) throw DomainError.notFound(`user "${v.username}" does not exist`);
      ownerId = owner.id;
    }
    if (v.actForOthers) {
      const owner = ownerId === principal.userId ? principal : await this.principalForUser(ownerId, "api-key");
      if (!isAdmin || !owner?.permissions.allows("user", "all")) {
        throw DomainError.forbidden("only holders of user:all may create keys that act for other users, and only for users who hold user:all");
      }
    }
    const apiKey = generateApiKey();
    const saved = await this.db.getRepository(ApiKeyEntity).save({ userId: ownerId, name: v.name, keyHash: hashApiKey(apiKey), keyPrefix: apiKeyPrefix(apiKey), actForOthers: v.actForOthers ?? false });
    return { apiKey, key: (await this.apiKeyViews({ ids: [saved.id] }))[0]! };
  }

  async listApiKeys(principal: Principal): Promise<ApiKeyView[]> {
    return this.apiKeyViews(principal.permissions.allows("user", "all") ? {} : { ownerId: principal.userId });
  }

  async revokeApiKey(principal: Principal, id: unknown): Promise<ApiKeyView> {
    const keyId = parseInput(z.uuid({ error: "must be an API key id (a UUID)" }), id, "id");
    const key = await this.db.getRepository(ApiKeyEntity).findOneBy({ id: keyId });
    if (!key || (key.userId !== principal.userId && !principal.permissions.allows("user", "all"))) throw DomainError.notFound(`API key ${keyId} not found`);
    if (!key.revokedAt) await this.db.query(`UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL`, [keyId]);
    return (await this.apiKeyViews({ ids: [keyId] }))[0]!;
  }

  private async apiKeyViews(filter: { ids?: string[]; ownerId?: string }): Promise<ApiKeyView[]> {
    const params: unknown[] = [];
    const where: string[] = [];
    if (filter.ids) where.push(`k.id = ANY($${params.push(filter.ids)})`);
    if (filter.ownerId) where.push(`k.user_id = $${params.push(filter.ownerId)}`);
    const rows: Array<{ id: string; name: string; key_prefix: string; owner: string; act_for_others: boolean; created_at: Date; revoked_at: Date | null }> = await this.db.query(
      `SELECT k.id, k.name, k.key_prefix, u.username AS owner, k.act_for_others, k.created_at, k.revoked_at
         FROM api_keys k JOIN users u ON u.id = k.user_id
        ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
        ORDER BY k.created_at, k.id`,
      params,
    );
    return rows.map((r) => ({ id: r.id, name: r.name, prefix: r.key_prefix, owner: r.owner, actForOthers: r.act_for_others, createdAt: r.created_at, revokedAt: r.revoked_at }));
  }
}

function uniqueViolationAsConflict(e: unknown, message: string, field: string): unknown {
  if (typeof e === "object" && e !== null && (e as { code?: string }).code === "23505") return DomainError.conflict(message, field);
  return e;
}
