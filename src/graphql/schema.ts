import "reflect-metadata";
import { createPubSub } from "@graphql-yoga/subscription";
import { lexicographicSortSchema, printSchema, type GraphQLSchema } from "graphql";
import { buildSchema } from "type-graphql";
import { ApiKeyResolver } from "../../resolvers/api-key.resolver.js";
import { CheckpointResolver } from "../../resolvers/checkpoint.resolver.js";
import { DatasetResolver } from "../../resolvers/dataset.resolver.js";
import { EndpointResolver } from "../../resolvers/endpoint.resolver.js";
import { InferenceResolver } from "../../resolvers/inference.resolver.js";
import { JobEventResolver } from "../../resolvers/job-event.resolver.js";
import { RoleResolver } from "../../resolvers/role.resolver.js";
import { SessionResolver } from "../../resolvers/session.resolver.js";
import { SystemCheckResolver } from "../../resolvers/system-check.resolver.js";
import { TrainingResolver } from "../../resolvers/training.resolver.js";
import { UserResolver } from "../../resolvers/user.resolver.js";

const RESOLVERS = [UserResolver, RoleResolver, ApiKeyResolver, SessionResolver, SystemCheckResolver, JobEventResolver, EndpointResolver, CheckpointResolver, DatasetResolver, InferenceResolver, TrainingResolver] as const;

let built: Promise<GraphQLSchema> | undefined;

/** The executable schema (built once per process: type-graphql's metadata is global). */
export function graphQLSchema(): Promise<GraphQLSchema> {
  // Subscriptions supply their own `subscribe` (the event log); the pub/sub is required by
  // type-graphql but carries nothing.
  built ??= buildSchema({ resolvers: RESOLVERS, pubSub: createPubSub(), validate: false });
  return built;
}

/** The SDL committed as schema.graphql, sorted so that it only changes when the API does. */
export async function printedSchema(): Promise<string> {
  return `${printSchema(lexicographicSortSchema(await graphQLSchema()))}\n`;
}
