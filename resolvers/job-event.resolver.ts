import { GraphQLJSONObject } from "graphql-scalars";
import { Arg, Field, ID, Int, ObjectType, Resolver, Root, Subscription } from "type-graphql";
import type { GraphQLContext } from "../src/graphql/context.js";
import type { StoredEvent } from "../src/domain/events.js";

@ObjectType("JobEvent", { description: "One stored event of a job: a state change or a progress step" })
export class JobEventType {
  @Field(() => ID, { description: "The job this event belongs to" })
  jobId!: string;

  @Field(() => Int, { description: "Position in the job's stream, from 1, without gaps; pass the last one seen as `after` to resume" })
  seq!: number;

  @Field(() => String, { description: "What happened, e.g. status, progress, probe" })
  type!: string;

  @Field(() => GraphQLJSONObject)
  data!: Record<string, unknown>;

  @Field(() => Boolean, { description: "True on the job's final event; the subscription completes after it" })
  terminal!: boolean;

  @Field(() => Date)
  createdAt!: Date;
}

export function toJobEventType(event: StoredEvent): JobEventType {
  return Object.assign(new JobEventType(), { jobId: event.streamId, seq: event.seq, type: event.type, data: event.data, terminal: event.terminal, createdAt: event.createdAt });
}

interface JobEventsArgs {
  jobId: string;
  after?: number | null;
}

@Resolver(() => JobEventType)
export class JobEventResolver {
  @Subscription(() => JobEventType, {
    description: "Every event of a job after sequence `after` (0 = from the start), then live events, in order, with no gaps or duplicates",
    subscribe: async ({ args, context }: { args: JobEventsArgs; context: GraphQLContext }) => {
      const principal = await context.principal();
      return context.runtime.jobEvents.follow(principal, args.jobId, args.after ?? 0);
    },
  })
  jobEvents(
    @Root() event: StoredEvent,
    @Arg("jobId", () => ID) _jobId: string,
    @Arg("after", () => Int, { nullable: true, defaultValue: 0 }) _after: number,
  ): JobEventType {
    return toJobEventType(event);
  }
}
