from workflows.registry import executor


@executor("transform", description="a second transform: refused, a type has one record")
def another_transform(ctx: object) -> None:
    return None
