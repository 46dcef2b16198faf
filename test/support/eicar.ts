import { createHash } from 'node:crypto';

/**
 * The EICAR anti-virus test file, assembled at runtime.
 *
 * The repository never contains the 68-byte EICAR string literally (some scanners and
 * hosting tools flag files that do). It is stored here as the base64 of the reversed
 * string, split in two, and rebuilt on demand.
 */
const REVERSED_B64_PARTS = [
  'KkgrSCQhRUxJRi1UU0VULVNVUklWSVROQS1EUkFETkFUUy1SQUNJRSR9',
  'NylDQzcpXlAoNDVYWlBcNFtQQUAlUCFPNVg=',
] as const;

/** MD5 of the EICAR test file (what ClamAV's `.hdb` signature matches on). */
export const EICAR_MD5 = '44d88612fea8a8f36de82e1278abb02f';

/** Size in bytes of the EICAR test file. */
export const EICAR_SIZE = 68;

/** Name ClamAV reports for a match of the `Eicar-Test-Signature` entry in an unsigned `.hdb` file. */
export const EICAR_THREAT = 'Eicar-Test-Signature.UNOFFICIAL';

/** Returns a fresh Buffer holding the EICAR test file (68 bytes, no trailing newline). */
export function eicarBytes(): Buffer {
  const reversed = Buffer.from(REVERSED_B64_PARTS.join(''), 'base64');
  const bytes = Buffer.from(reversed).reverse();
  const md5 = createHash('md5').update(bytes).digest('hex');
  if (bytes.length !== EICAR_SIZE || md5 !== EICAR_MD5) {
    throw new Error(`eicarBytes(): assembled ${bytes.length} bytes with md5 ${md5}, expected the EICAR file`);
  }
  return bytes;
}
