import { describe, expect, it } from 'vitest';
import {
  cleanText,
  contentDispositionFilename,
  lastPathSegment,
  parseInfectionFound,
  parseLastlineArtifact,
  parseScore,
  parseTaskUuid,
  parseViolations,
  splitParams,
} from '../../../src/engine/verdict/fields.js';

describe('verdict field readers', () => {
  it('splitParams keeps parenthesised ";" and tolerates spacing', () => {
    expect(splitParams('Type=0;Resolution=1;Threat=LastlineArtifact(score=1;md5=a;uuid=b)')).toEqual([
      ['type', '0'],
      ['resolution', '1'],
      ['threat', 'LastlineArtifact(score=1;md5=a;uuid=b)'],
    ]);
    expect(splitParams(' a = 1 ;; b=x=y ; lone ')).toEqual([
      ['a', '1'],
      ['b', 'x=y'],
      ['', 'lone'],
    ]);
    expect(splitParams('a=(;b=2')).toEqual([
      ['a', '('],
      ['b', '2'],
    ]);
    expect(splitParams('a=);b=2')).toEqual([
      ['a', ')'],
      ['b', '2'],
    ]);
  });

  it('parseInfectionFound', () => {
    expect(parseInfectionFound('Type=0; Resolution=2; Threat=Eicar-Test-Signature.UNOFFICIAL;')).toEqual({
      type: 0,
      resolution: 2,
      threat: 'Eicar-Test-Signature.UNOFFICIAL',
    });
    expect(parseInfectionFound('')).toEqual({ type: undefined, resolution: undefined, threat: undefined });
    expect(parseInfectionFound('Type=x; Threat=')).toEqual({
      type: undefined,
      resolution: undefined,
      threat: undefined,
    });
  });

  it('parseViolations', () => {
    expect(parseViolations([])).toEqual({ count: undefined, violations: [] });
    expect(parseViolations(['2', 'f', 't', '', '9'])).toEqual({
      count: 2,
      violations: [{ file_name: 'f', threat_name: 't', resolution: 'ICAP_FILE_NOT_REPAIRED' }],
    });
    expect(parseViolations(['1', 'only-a-file'])).toEqual({ count: 1, violations: [] });
  });

  it('contentDispositionFilename', () => {
    expect(contentDispositionFilename('form-data; name="f"; filename="a \\"b\\".txt"')).toBe('a "b".txt');
    expect(contentDispositionFilename('attachment; filename=plain.txt')).toBe('plain.txt');
    expect(contentDispositionFilename('attachment; filename="x.txt"; filename*=UTF-8\'\'%E2%82%AC.txt')).toBe(
      '€.txt',
    );
    expect(contentDispositionFilename("attachment; filename*=iso-8859-1''caf%E9.txt")).toBe('café.txt');
    expect(contentDispositionFilename("attachment; filename*=UTF-8''%E2%82.txt; filename=fallback.txt")).toBe(
      'fallback.txt',
    );
    // raw UTF-8 bytes read back as Latin-1 by the parser
    expect(
      contentDispositionFilename(`attachment; filename="${Buffer.from('résumé.pdf').toString('latin1')}"`),
    ).toBe('résumé.pdf');
    expect(contentDispositionFilename('attachment; filename="C:\\\\dir\\\\evil.exe"')).toBe('evil.exe');
    expect(contentDispositionFilename('inline')).toBeUndefined();
    expect(contentDispositionFilename(undefined)).toBeUndefined();
  });

  it('lastPathSegment', () => {
    expect(lastPathSegment('http://host/a/b/c.txt?x=/y#z')).toBe('c.txt');
    expect(lastPathSegment('/upload/')).toBeUndefined();
    expect(lastPathSegment('/bad%E0%A4%A')).toBe('bad%E0%A4%A');
    expect(lastPathSegment(undefined)).toBeUndefined();
  });

  it('parseLastlineArtifact, parseScore, parseTaskUuid', () => {
    expect(
      parseLastlineArtifact(
        'LastlineArtifact(score=100;md5=44D88612FEA8A8F36DE82E1278ABB02F;uuid=0123456789abcdef0123456789abcdef)',
      ),
    ).toEqual({
      score: 100,
      md5: '44d88612fea8a8f36de82e1278abb02f',
      uuid: '0123456789abcdef0123456789abcdef',
    });
    expect(parseLastlineArtifact('LastlineArtifact(score=XX;md5=;uuid=)')).toEqual({
      score: undefined,
      md5: undefined,
      uuid: undefined,
    });
    expect(parseLastlineArtifact('Eicar')).toBeUndefined();
    expect(parseScore('0')).toBe(0);
    expect(parseScore('100')).toBe(100);
    expect(parseScore('101')).toBeUndefined();
    expect(parseScore('-1')).toBeUndefined();
    expect(parseScore('5.5')).toBeUndefined();
    expect(parseTaskUuid('0f8fad5b-d9cb-469f-a165-70867728950e')).toBe(
      '0f8fad5b-d9cb-469f-a165-70867728950e',
    );
    expect(parseTaskUuid('deadbeef')).toBeUndefined();
    expect(parseTaskUuid('0123456789abcdef0123456789abcdef/../x')).toBeUndefined();
    expect(parseTaskUuid('--')).toBeUndefined();
  });
});

describe('cleanText (campaign-bl BL7)', () => {
  it('replaces C0, DEL and the marks that reorder or break text with a space', () => {
    expect(cleanText('Trojan\u202etxt.exe')).toBe('Trojan txt.exe');
    expect(cleanText('a\u2066b\u2069c\u200ed\u2028e\u2029f\x00g\x7fh')).toBe('a b c d e f g h');
    // C1 stays: the continuation bytes of a UTF-8 name read byte for byte.
    expect(cleanText(Buffer.from('Kaspersky—Trojan', 'utf8').toString('latin1'))).toBe(
      Buffer.from('Kaspersky—Trojan', 'utf8').toString('latin1'),
    );
  });
});
