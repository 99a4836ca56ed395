import { Redis } from "ioredis";

/** A Redis connection usable by BullMQ (which requires `maxRetriesPerRequest: null`) and by pub/sub. */
export function createRedisConnection(url: string, name: string): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, connectionName: name, enableReadyCheck: true, lazyConnect: false });
}

/** Closes gracefully when connected, or drops the socket when Redis is already gone. */
export async function closeRedis(redis: Redis): Promise<void> {
  if (redis.status === "end") return;
  try {
    await Promise.race([redis.quit(), new Promise((_, reject) => setTimeout(() => reject(new Error("quit timed out")), 1000))]);
  } catch {
    redis.disconnect();
  }
}
