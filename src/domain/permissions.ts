/**
 * Upstream's permission strings: "<resource>:<action>". `all` implies every action on the resource.
 * `list` lets a holder see what others of their role created; `create` lets them create.
 */
export const RESOURCES = ["train", "checkpoint", "inference", "sagemaker_endpoint", "user", "role"] as const;
export const ACTIONS = ["all", "create", "list"] as const;
export type Resource = (typeof RESOURCES)[number];
export type Action = (typeof ACTIONS)[number];
export type Permission = `${Resource}:${Action}`;

export const ALL_PERMISSIONS: Permission[] = RESOURCES.flatMap((r) => ACTIONS.map((a) => `${r}:${a}` as Permission));
export const ADMIN_ROLE = "IT Operator";
export const ADMIN_ROLE_PERMISSIONS: Permission[] = RESOURCES.map((r) => `${r}:all` as Permission);

export function isPermission(value: string): value is Permission {
  return (ALL_PERMISSIONS as string[]).includes(value);
}

export class PermissionSet {
  private readonly byResource = new Map<Resource, Set<Action>>();

  constructor(permissions: Iterable<string>) {
    for (const p of permissions) {
      if (!isPermission(p)) continue;
      const [resource, action] = p.split(":") as [Resource, Action];
      let actions = this.byResource.get(resource);
      if (!actions) this.byResource.set(resource, (actions = new Set()));
      actions.add(action);
    }
  }

  /** True when the holder may perform `action` on `resource` (`all` implies create and list). */
  allows(resource: Resource, action: Action): boolean {
    const actions = this.byResource.get(resource);
    if (!actions) return false;
    return actions.has("all") || actions.has(action);
  }

  /** A permission can be handed to others only by someone who holds it (or `<resource>:all`). */
  canGrant(permission: Permission): boolean {
    const [resource, action] = permission.split(":") as [Resource, Action];
    return this.allows(resource, action);
  }

  list(): Permission[] {
    return [...this.byResource.entries()].flatMap(([r, actions]) => [...actions].map((a) => `${r}:${a}` as Permission)).sort();
  }
}
