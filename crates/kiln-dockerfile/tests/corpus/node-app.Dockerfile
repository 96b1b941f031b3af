FROM debian:bookworm AS deps
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --omit=dev
FROM deps AS build
COPY . .
RUN npm run build
FROM debian:bookworm
COPY --from=build /usr/bin/node /usr/bin/node
COPY --from=deps /app/node_modules /app/node_modules
COPY --from=build /app/dist /app/dist
WORKDIR /app
USER 1000
CMD ["node", "dist/server.js"]
