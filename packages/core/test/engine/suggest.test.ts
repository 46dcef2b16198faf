import { describe, expect, it } from 'vitest';
import { type IcapProfile, resolveProfile } from '../../src/engine/profile.js';
import { closeNames, editDistance } from '../../src/engine/suggest.js';

const base: IcapProfile = { name: 'p', poolGroup: 'icap://127.0.0.1', serviceUri: '/avscan' };

/** The message of the error a profile is rejected with. */
function rejection(profile: Record<string, unknown>): string {
  try {
    resolveProfile(profile as unknown as IcapProfile);
  } catch (err) {
    expect(err).toMatchObject({ code: 'ICAP_ERR_INVALID_PROFILE' });
    return (err as Error).message;
  }
  return expect.unreachable('the profile should be rejected');
}

describe('did you mean: a misspelt option names the option meant', () => {
  it.each([
    [{ bufferSzie: 5 }, 'profile.bufferSzie', 'bufferSize'],
    [{ buffersize: 5 }, 'profile.buffersize', 'bufferSize'],
    [{ failaction: 'fail-open' }, 'profile.failaction', 'failAction'],
    [{ servicUri: '/x' }, 'profile.servicUri', 'serviceUri'],
    [{ onlog: () => {} }, 'profile.onlog', 'onLog'],
    [{ startupChek: 'off' }, 'profile.startupChek', 'startupCheck'],
    [{ connection: { conectTimeout: 5 } }, 'profile.connection.conectTimeout', 'connectTimeout'],
    [{ health: { failureLimt: 2 } }, 'profile.health.failureLimt', 'failureLimit'],
    [{ multipartLimits: { flies: 2 } }, 'profile.multipartLimits.flies', 'files'],
    [
      { poolGroup: { pools: [{ nmae: 'a', servers: ['icap://h'] }] } },
      'profile.poolGroup.pools[0].nmae',
      'name',
    ],
    [
      { poolGroup: { pools: [{ name: 'a', servers: [{ host: 'h', prot: 1344 }] }] } },
      'profile.poolGroup.pools[0].servers[0].prot',
      'port',
    ],
    [{ rules: [{ name: 'r', action: 'skip', mtach: {} }] }, 'rules[0].mtach', 'match'],
    [
      { rules: [{ name: 'r', action: 'skip', match: { contentTyp: 'x' } }] },
      'rules[0].match.contentTyp',
      'contentType',
    ],
  ])('%j: %s is not a known option; did you mean "%s"?', (over, field, meant) => {
    const message = rejection({ ...base, ...over });
    expect(message).toContain(`${field} is not a known option`);
    expect(message).toMatch(new RegExp(`; did you mean "${meant}"\\?$`));
    // The one name, not the whole list.
    expect(message).not.toContain('known:');
    expect(message).not.toContain('allowedContentTypes');
  });

  it('a name close to nothing lists the known options instead of guessing', () => {
    const message = rejection({ ...base, colour: 'red' });
    expect(message).not.toContain('did you mean');
    expect(message).toMatch(/profile\.colour is not a known option \(known: name, poolGroup, serviceUri, /);
  });

  it('two names equally close are both offered', () => {
    expect(closeNames('pol', ['pool', 'poll', 'name'])).toEqual(['pool', 'poll']);
  });
});

describe('editDistance (optimal string alignment)', () => {
  it.each([
    ['', '', 0],
    ['abc', '', 3],
    ['kitten', 'sitting', 3],
    ['bufferSzie', 'bufferSize', 1], // a swap of neighbours is one edit
    ['ca', 'abc', 3], // OSA, not unrestricted Damerau (which gives 2)
    ['abc', 'abc', 0],
  ])('%j -> %j is %d', (a, b, d) => {
    expect(editDistance(a, b)).toBe(d);
    expect(editDistance(b, a)).toBe(d);
  });

  it('stops early past a limit', () => {
    expect(editDistance('aaaaaaaaaa', 'bbbbbbbbbb', 2)).toBe(3);
    expect(editDistance('a', 'abcdef', 2)).toBe(3);
  });

  it('only close names are offered: at most a third of the length (at least one edit)', () => {
    expect(closeNames('nope', ['name', 'rules'])).toEqual([]);
    expect(closeNames('tl', ['tls'])).toEqual(['tls']);
    expect(closeNames('multipartConcurency', ['multipartConcurrency', 'multipart'])).toEqual([
      'multipartConcurrency',
    ]);
  });
});
