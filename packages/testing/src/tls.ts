import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A throw-away CA and a server certificate it signed, for ICAPS tests. */
export interface TestCertificate {
  /** Server certificate (PEM). */
  cert: string;
  /** Server private key (PEM). */
  key: string;
  /** The CA certificate clients must trust (PEM). */
  ca: string;
  /** Folder holding the files (ca.crt, server.crt, server.key). */
  dir: string;
  cleanup(): Promise<void>;
}

export interface CertificateOptions {
  /** Names the certificate is valid for. Default: DNS localhost and IP 127.0.0.1. */
  names?: string[];
}

/**
 * Creates a CA and a server certificate with the `openssl` command (EC P-256, valid 2 days).
 * Give other `names` to make a certificate that does not match the server (a wrong one).
 */
export async function generateTestCertificate(options: CertificateOptions = {}): Promise<TestCertificate> {
  const dir = await mkdtemp(join(tmpdir(), 'icapkit-cert-'));
  const names = options.names ?? ['DNS:localhost', 'IP:127.0.0.1'];
  try {
    await writeFile(
      join(dir, 'server.ext'),
      `subjectAltName=${names.join(',')}\nextendedKeyUsage=serverAuth\n`,
    );
    const run = (args: string[]) => openssl(args, dir);
    await run(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca.key']);
    await run([
      'req',
      '-x509',
      '-new',
      '-key',
      'ca.key',
      '-sha256',
      '-days',
      '2',
      '-subj',
      '/CN=icapkit test CA',
      '-out',
      'ca.crt',
    ]);
    await run(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'server.key']);
    await run([
      'req',
      '-new',
      '-key',
      'server.key',
      '-subj',
      '/CN=icapkit test server',
      '-out',
      'server.csr',
    ]);
    await run([
      'x509',
      '-req',
      '-in',
      'server.csr',
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '2',
      '-sha256',
      '-extfile',
      'server.ext',
      '-out',
      'server.crt',
    ]);
    const [cert, key, ca] = await Promise.all(
      ['server.crt', 'server.key', 'ca.crt'].map((f) => readFile(join(dir, f), 'utf8')),
    );
    return { cert: cert!, key: key!, ca: ca!, dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

function openssl(args: string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('openssl', args, { cwd, timeout: 20_000 }, (err, _stdout, stderr) => {
      if (err) reject(new Error(`openssl ${args[0]} failed: ${stderr || err.message}`));
      else resolve();
    });
  });
}
