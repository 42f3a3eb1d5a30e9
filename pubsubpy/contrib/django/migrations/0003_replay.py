from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('pubsubpy', '0002_ordering'),
    ]

    operations = [
        migrations.CreateModel(
            name='ReplayCheckpoint',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=255, unique=True)),
                ('state', models.TextField()),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
            options={
                'db_table': 'pubsubpy_replay_checkpoint',
            },
        ),
    ]
