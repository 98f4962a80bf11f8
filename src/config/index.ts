export * from './units.js';
export * from './schema.js';
export * from './load.js';
