/**
 * The literal start of a glob, which every name it matches begins with: lets an adapter narrow a
 * listing (a Redis SCAN MATCH, a SQL `LIKE 'prefix%'`) before filtering with `compileGlob`.
 * Empty for a negated pattern.
 */
export function literalPrefix(pattern: string): string {
  if (pattern.startsWith('!') || pattern.startsWith('.')) return ''
  const special = pattern.search(/[*?[\]{}()!+@\\]/)
  return special === -1 ? pattern : pattern.slice(0, special)
}
