/**
 * "Did you mean": the known option names close to a misspelt one, for the messages of an
 * invalid profile (`profile.bufferSzie is not a known option; did you mean "bufferSize"?`).
 *
 * Closeness is the optimal-string-alignment distance (Damerau-Levenshtein: insertions,
 * deletions, substitutions and swaps of two neighbours, each counting 1), case-insensitive
 * (`buffersize` is 0 away from `bufferSize`). Only close names are offered: at most a third of
 * the longer name's length (at least 1), so `nope` suggests nothing rather than `name`.
 */

/** At most this many names are suggested (the closest, ties in the order given). */
const MAX_SUGGESTIONS = 2;

/** The optimal-string-alignment distance between `a` and `b`, or `limit + 1` once it is known to exceed `limit`. */
export function editDistance(a: string, b: string, limit = Number.POSITIVE_INFINITY): number {
  if (Math.abs(a.length - b.length) > limit) return limit + 1;
  // Three rows of the dynamic programme: i-2, i-1 and i.
  let twoBack: number[] = [];
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    let rowMin = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        d = Math.min(d, twoBack[j - 2]! + 1);
      row.push(d);
      if (d < rowMin) rowMin = d;
    }
    if (rowMin > limit) return limit + 1;
    twoBack = prev;
    prev = row;
  }
  return prev[b.length]!;
}

/** The known names close enough to `name` to be what was meant, closest first. */
export function closeNames(name: string, known: Iterable<string>): string[] {
  const wanted = name.toLowerCase();
  let best = Number.POSITIVE_INFINITY;
  let found: string[] = [];
  for (const candidate of known) {
    const limit = Math.max(1, Math.floor(Math.max(wanted.length, candidate.length) / 3));
    const d = editDistance(wanted, candidate.toLowerCase(), Math.min(limit, best));
    if (d > limit || d > best) continue;
    if (d < best) {
      best = d;
      found = [];
    }
    found.push(candidate);
  }
  return found.slice(0, MAX_SUGGESTIONS);
}

/**
 * The end of an "unknown option" message: `; did you mean "bufferSize"?` when a known name is
 * close, otherwise the list of known names (`(known: a, b, c)`), as before.
 */
export function unknownOptionHint(name: string, known: Iterable<string>): string {
  const names = [...known];
  const close = closeNames(name, names);
  if (close.length > 0) return `; did you mean ${close.map((n) => JSON.stringify(n)).join(' or ')}?`;
  return ` (known: ${names.join(', ')})`;
}
