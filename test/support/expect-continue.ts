import { request } from 'node:http';

/**
 * How a request of `body` with `Expect: 100-continue` is answered: whether 100 Continue came
 * first (the body is sent then, and only then), and the final status. Fails after 5 s.
 */
export function expectContinue(
  url: string,
  method: string,
  path: string,
  body: Buffer,
  contentType = 'application/octet-stream',
): Promise<{ continued: boolean; status: number }> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, {
      method,
      headers: {
        'content-type': contentType,
        'content-length': body.length,
        expect: '100-continue',
        connection: 'close',
      },
    });
    let continued = false;
    req.on('continue', () => {
      continued = true;
      req.end(body);
    });
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => {
        resolve({ continued, status: res.statusCode ?? 0 });
        req.destroy();
      });
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error('no answer in 5 s')));
    req.flushHeaders();
  });
}
