module corral.example/recipe

go 1.19
