export type { IcapProfile, IcapRequestInfo } from '@icapkit/core';
export { toWebStream, WebBodyReadable } from './body.js';
export { disposeWhenSent } from './held.js';
export * from './next.js';
export * from './refusal.js';
export { toScanRequest, type WebRequestInfo, type WebScanRequest } from './request.js';
export * from './scan.js';
