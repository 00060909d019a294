"""What is done to adapter folders, apart from answering with them. For now: the names an
adapter may take and the base model's reserved name, each defined once here."""
