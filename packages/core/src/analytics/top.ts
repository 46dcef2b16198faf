/** Picking the most frequent values of a facet (aggregate.ts). */

/**
 * The `k` most frequent values (ties by value), without sorting them all: clients choose how
 * many distinct values there are (file names, paths).
 */
export function topOf(counts: ReadonlyMap<string, number>, k: number): Array<[string, number]> {
  const before = (a: [string, number], b: [string, number]) => a[1] > b[1] || (a[1] === b[1] && a[0] < b[0]);
  const top: Array<[string, number]> = [];
  if (k <= 0) return top;
  // Inserting into a long list costs more than one sort.
  if (k > 64) return [...counts].sort((a, b) => (before(a, b) ? -1 : before(b, a) ? 1 : 0)).slice(0, k);
  for (const e of counts) {
    if (top.length === k && !before(e, top[k - 1]!)) continue;
    let i = Math.min(top.length, k - 1);
    while (i > 0 && before(e, top[i - 1]!)) i--;
    top.splice(i, 0, e);
    if (top.length > k) top.pop();
  }
  return top;
}
