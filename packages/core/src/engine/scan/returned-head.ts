import type { IcapResponse } from '../../client/transaction-types.js';
import {
  connectionNamed,
  endToEndHeaders,
  type Headers,
  HOP_BY_HOP_FIELDS,
  isSafeFieldValue,
  isToken,
} from '../../protocol/headers.js';
import { absoluteTarget, type HttpRequestFacts } from '../request.js';

/**
 * The request head a modified answer returns: whether it is the one sent (an echo's, compared
 * field by field), and the head the application gets from it (sanitised, with the new length).
 */
/** Fields of a returned request head that do not make it a modification. */
const IGNORED_IN_COMPARISON = new Set([
  'via',
  'content-length',
  'transfer-encoding',
  'date',
  'connection',
  'keep-alive',
]);

function comparable(key: string): boolean {
  return !key.startsWith(':') && !IGNORED_IN_COMPARISON.has(key) && !key.startsWith('x-lastline-');
}

function comparableHeaders(pairs: Iterable<readonly [string, string]>): string[] {
  const out: string[] = [];
  for (const [n, v] of pairs) {
    const key = n.toLowerCase();
    if (!comparable(key)) continue;
    out.push(`${key}:${v.trim()}`);
  }
  return out.sort();
}

/**
 * Whether the comparable fields of `a` and the end-to-end comparable fields of `sentPairs`
 * (endToEndHeaders(sentPairs), filtered here) are the same in the same order (as an echo
 * returns them), without building or sorting anything, `a` read by index (its names lower-cased
 * already). True implies the sorted comparison below is true too; false says nothing (it
 * decides then).
 */
function sameFieldsInOrder(a: Headers, sentPairs: ReadonlyArray<readonly [string, string]>): boolean {
  const named = connectionNamed(sentPairs);
  const n = a.size;
  let j = 0;
  for (let i = 0; i < n; i++) {
    const key = a.keyAt(i);
    if (!comparable(key)) continue;
    let other: readonly [string, string] | undefined;
    let otherKey = '';
    while (j < sentPairs.length) {
      const candidate = sentPairs[j++]!;
      const k = candidate[0].toLowerCase();
      if (endToEnd(k, named) && comparable(k)) {
        other = candidate;
        otherKey = k;
        break;
      }
    }
    if (other === undefined || otherKey !== key || other[1].trim() !== a.valueAt(i).trim()) return false;
  }
  while (j < sentPairs.length) {
    const k = sentPairs[j++]![0].toLowerCase();
    if (endToEnd(k, named) && comparable(k)) return false;
  }
  return true;
}

/** What endToEndHeaders keeps of a field (`key` lower-cased; `named`: what Connection names). */
function endToEnd(key: string, named: ReadonlySet<string>): boolean {
  return !key.startsWith(':') && !HOP_BY_HOP_FIELDS.has(key) && !named.has(key);
}

/** Whether a returned request head is the one sent (an echo's): the fields compared, in order or not. Exported for tests. */
export function sameRequestHead(
  head: NonNullable<IcapResponse['httpRequest']>,
  facts: HttpRequestFacts,
  absolute: boolean,
): boolean {
  if (head.method.toUpperCase() !== facts.method) return false;
  const sentTarget = absolute ? absoluteTarget(facts) : facts.target;
  if (head.target !== sentTarget && originForm(head.target) !== originForm(facts.target)) return false;
  if (sameFieldsInOrder(head.headers, facts.headerPairs)) return true;
  const a = comparableHeaders(head.headers);
  const b = comparableHeaders(endToEndHeaders(facts.headerPairs));
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function originForm(target: string): string {
  const m = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*(.*)$/i.exec(target);
  if (m === null) return target;
  return m[1] === '' ? '/' : m[1]!;
}

/** The request head for the application from a modified request: sanitised, with the new length. */
export function rewriteHead(
  head: IcapResponse['httpRequest'],
  facts: HttpRequestFacts,
  length: number,
): { method: string; url: string; headers: Array<[string, string]> } {
  const source: Iterable<readonly [string, string]> = head?.headers ?? facts.headerPairs;
  const headers: Array<[string, string]> = [];
  for (const [name, value] of endToEndHeaders(source)) {
    const key = name.toLowerCase();
    if (key === 'content-length' || key.startsWith('x-lastline-')) continue;
    if (!isToken(name) || !isSafeFieldValue(value)) continue;
    headers.push([name, value]);
  }
  headers.push(['content-length', String(length)]);
  const method = head !== null && isToken(head.method) ? head.method.toUpperCase() : facts.method;
  const url = head !== null ? originForm(head.target) : facts.target;
  return { method, url: url.startsWith('/') ? url : facts.target, headers };
}
