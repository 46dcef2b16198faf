export type { Fault, FaultKind, FaultMoment } from './faults.js';
export type { IcapServerOptions, IcapTestServer, RecordedRequest } from './server.js';
export { startIcapServer } from './server.js';
export type { Signature } from './signatures.js';
export { EICAR_NAME, eicar, StreamScanner } from './signatures.js';
export type { CertificateOptions, TestCertificate } from './tls.js';
export { generateTestCertificate } from './tls.js';
export type { VendorStyle } from './vendors.js';
