"""placeholder"""
from lightning import LightningModule


class QuestionAnsweringTask(LightningModule):
    pass
