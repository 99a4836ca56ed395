/**
 * Why a file name a client chose for an object key is refused, or undefined when it is fine: a single
 * path segment (no separators, no "..", no control characters) of at most 255 characters, ending in
 * one of `extensions` with something before it.
 */
export function uploadedFileNameProblem(name: string, extensions: readonly string[]): string | undefined {
  if (name.length === 0) return "must not be empty";
  if (name.length > 255) return "must be at most 255 characters";
  if (/[/\\]/.test(name)) return "must not contain path separators";
  if (name.includes("..")) return 'must not contain ".."';
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return "must not contain control characters";
  const lower = name.toLowerCase();
  if (!extensions.some((ext) => lower.endsWith(ext) && lower.length > ext.length)) return `must end with one of ${extensions.join(" ")}`;
  return undefined;
}
