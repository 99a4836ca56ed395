import { Arg, Ctx, Field, ID, Int, Mutation, ObjectType, Query, Resolver } from "type-graphql";
import type { GraphQLContext } from "../src/graphql/context.js";
import type { SystemCheckView } from "../src/services/system-check-service.js";

@ObjectType("DependencyProbe")
export class DependencyProbeType {
  @Field(() => String)
  name!: string;

  @Field(() => Boolean)
  ok!: boolean;

  @Field(() => Int)
  latencyMs!: number;

  @Field(() => String, { nullable: true })
  detail?: string;
}

@ObjectType("SystemCheck", { description: "A worker's check of every dependency; follow it with jobEvents(jobId: id)" })
export class SystemCheckType {
  @Field(() => ID)
  id!: string;

  @Field(() => String, { description: "QUEUED, RUNNING, SUCCEEDED or FAILED" })
  status!: string;

  @Field(() => [DependencyProbeType])
  probes!: DependencyProbeType[];

  @Field(() => String, { nullable: true, description: "host:pid of the worker that ran it" })
  workerId!: string | null;

  @Field(() => Date)
  createdAt!: Date;

  @Field(() => Date, { nullable: true })
  finishedAt!: Date | null;
}

const toType = (view: SystemCheckView) => Object.assign(new SystemCheckType(), view, { probes: view.probes.map((p) => Object.assign(new DependencyProbeType(), p)) });

@Resolver(() => SystemCheckType)
export class SystemCheckResolver {
  @Mutation(() => SystemCheckType, { description: "Queues a check of Postgres, Redis, the object store and SageMaker as a worker sees them (user:all)" })
  async runSystemCheck(@Ctx() ctx: GraphQLContext): Promise<SystemCheckType> {
    return toType(await ctx.runtime.systemChecks.request(await ctx.principal()));
  }

  @Query(() => SystemCheckType)
  async systemCheck(@Ctx() ctx: GraphQLContext, @Arg("id", () => ID) id: string): Promise<SystemCheckType> {
    return toType(await ctx.runtime.systemChecks.get(await ctx.principal(), id));
  }
}
