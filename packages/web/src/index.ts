export type { IcapProfile, IcapRequestInfo } from '@icapkit/core';
export { toWebStream, WebBodyReadable } from './body.js';
export * from './next.js';
export { toScanRequest, type WebRequestInfo, type WebScanRequest } from './request.js';
export * from './scan.js';
