"""Distillation: settings (`config`), the shared trainer, the stages (finetune, S1, S2a, teacher
logits, S2b), their losses, and the entry every process runs (`distilqa.train`).

Nothing is imported here, so reading a stage's settings (the CLI builds its flags from them) does
not load torch.
"""
