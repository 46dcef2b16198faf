/**
 * Type tests, compiled (never run) by readme-snippets.test.ts under `tsc --strict`: each
 * `@ts-expect-error` must meet an error, or the test fails (TS2578).
 */
import type { IcapRefusal, IcapRequestInfo } from '@icapkit/core';
import { icap as expressIcap, icapInfo as expressInfo, IcapRefusalError } from '@icapkit/express';
import { icap as fastifyIcap, icapInfo as fastifyInfo, type IcapRouteOptions } from '@icapkit/fastify';
import { type IcapState, icap as koaIcap, icapInfo as koaInfo } from '@icapkit/koa';
import express, { type Request, type Response } from 'express';
import Fastify from 'fastify';
import Koa from 'koa';

const profile = { name: 'uploads', poolGroup: 'icap://127.0.0.1:1344', serviceUri: '/avscan' };

// The scan's description is typed the same way in all three, without `!`.
const app = express();
app.use(expressIcap(profile));
app.post('/upload', (req, res) => {
  const info: IcapRequestInfo = req.icap;
  res.json({ action: info.action, threat: req.icap.threat });
  const maybe: IcapRequestInfo | undefined = expressInfo(req);
  void maybe;
});
// The Expect: 100-continue guard reads the app's router (campaign-br BR6).
const uploadScan = expressIcap(profile);
app.use('/upload', uploadScan);
uploadScan.guardExpectContinue(app.listen(0), app);
// An error handler sees the refusal error and the scan's description.
app.use((err: unknown, req: Request, res: Response, _next: express.NextFunction) => {
  if (err instanceof IcapRefusalError) {
    const status: number = err.status;
    const expose: boolean = err.expose;
    res
      .status(err.statusCode)
      .json({ status, expose, code: err.code, reason: err.reason, action: req.icap.action });
  }
});

const fastify = Fastify();
await fastify.register(fastifyIcap, { ...profile, refusals: 'error' });
fastify.post('/upload', async (request) => {
  const info: IcapRequestInfo = request.icap;
  return { action: info.action, maybe: fastifyInfo(request)?.action };
});
fastify.setErrorHandler((err, _request, reply) => {
  if (err instanceof IcapRefusalError) return reply.code(err.statusCode).send({ code: err.code });
  return reply.send(err);
});

const koa = new Koa();
koa.use(koaIcap(profile));
koa.use((ctx) => {
  const info: IcapRequestInfo = ctx.state.icap;
  ctx.body = { action: info.action, maybe: koaInfo(ctx)?.action };
});
// An application with its own state type adds IcapState.
const typed = new Koa<{ user: string } & IcapState>();
typed.use((ctx) => {
  const action: IcapRequestInfo['action'] = ctx.state.icap.action;
  ctx.body = { action, user: ctx.state.user };
});

// Route config of @icapkit/fastify is typed by declaration merging.
fastify.post('/off', { config: { icap: false } }, async () => 'not scanned');
fastify.post('/cdr', { config: { icap: { serviceUri: '/cdr', bufferSize: '5mb' } } }, async () => 'ok');
// @ts-expect-error: a string is not a route config
fastify.post('/a', { config: { icap: 'nope' } }, async () => 'x');
// @ts-expect-error: nor a number
fastify.post('/b', { config: { icap: 5 } }, async () => 'x');
// @ts-expect-error: nor an array
fastify.post('/c', { config: { icap: ['/cdr'] } }, async () => 'x');
// @ts-expect-error: a known field with a wrong value
fastify.post('/d', { config: { icap: { failAction: 'fail-opne' } } }, async () => 'x');
// An unknown key: Fastify infers the route's config type from the literal, so only
// `satisfies` (or the start-up check, which names the route) catches it.
// @ts-expect-error: bufferSzie is not a profile field
fastify.post('/e', { config: { icap: { bufferSzie: 5 } satisfies IcapRouteOptions } }, async () => 'x');

// Refusal options: the same names in all adapters, framework arguments typed.
expressIcap(profile, {
  onRefusal: (refusal: IcapRefusal, req: Request, res: Response) => {
    if (refusal.reason === 'blocked') return { status: 422, body: { threat: refusal.threat } };
    res.status(refusal.status).send(`refused: ${req.url}`);
  },
});
expressIcap(profile, { refusals: 'error' });
// @ts-expect-error: not a refusal mode
expressIcap(profile, { refusals: 'throw' });
koaIcap(profile, {
  onRefusal: (refusal, ctx) => {
    ctx.body = { code: refusal.code };
  },
});
await fastify.register(fastifyIcap, {
  ...profile,
  onRefusal: (refusal, request, reply) => reply.code(refusal.status).send({ url: request.url }),
});
