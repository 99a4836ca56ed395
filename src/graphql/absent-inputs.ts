/** GraphQL sends null for omitted nullable inputs; services treat "absent" and "null" alike as absent. */
export function withoutNulls<T extends Record<string, unknown>>(input: T): T {
  return Object.fromEntries(Object.entries(input).filter(([, v]) => v !== null && v !== undefined)) as T;
}
