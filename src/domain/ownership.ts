import { DomainError } from "./errors.js";
import type { Resource } from "./permissions.js";
import type { Principal } from "./principal.js";

/** Something owned by its creator and shared with roles (checkpoints, datasets: upstream's allowed_roles_or_users). */
export interface SharedWithRoles {
  creatorId: string | null;
  allowedRoles: string[];
}

/**
 * SQL condition (for a query builder alias) selecting what the caller may see: everything with
 * `<resource>:all`, else what they created or what is shared with one of their roles.
 */
export function visibleToCaller(principal: Principal, resource: Resource, alias: string): { sql: string; params: Record<string, unknown> } {
  if (principal.permissions.allows(resource, "all")) return { sql: "TRUE", params: {} };
  return { sql: `(${alias}.creator_id = :me OR ${alias}.allowed_roles && :myRoles)`, params: { me: principal.userId, myRoles: principal.roles } };
}

/**
 * Only the creator (or a holder of `<resource>:all`) may change or delete. Others get NOT_FOUND when
 * they cannot even see it, and FORBIDDEN when it is shared with them.
 */
export function assertMayChange<T extends SharedWithRoles>(principal: Principal, resource: Resource, item: T | null, notFoundMessage: string, description: string): asserts item is T {
  if (!item) throw DomainError.notFound(notFoundMessage);
  if (item.creatorId === principal.userId || principal.permissions.allows(resource, "all")) return;
  if (!item.allowedRoles.some((r) => principal.roles.includes(r))) throw DomainError.notFound(notFoundMessage);
  throw DomainError.forbidden(`${description} belongs to another user; changing it needs ${resource}:all`);
}
