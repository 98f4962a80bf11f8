/** The shape of agent.yaml and server.yaml (zod schemas), and the types the program uses. */
export * from './agent-schema.js';
export * from './server-schema.js';
export { describeValue, parseHostPort, type HostPort } from './leaves.js';
